"""SENet-154 of the official SENet release; its weights are timm's port (RGB mean / std)."""

from sknet_keras.applications.module_api import named_builder, preprocessing_functions

SENet154 = named_builder("senet154", "SENet154")
preprocess_input, decode_predictions = preprocessing_functions("torch")
