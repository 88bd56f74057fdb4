"""SE-ResNeXt-50/101 32x4d (timm layout; the SKNet paper's SENet-50/101)."""

from sknet_keras.applications.module_api import named_builder, preprocessing_functions

SEResNeXt50 = named_builder("seresnext50", "SEResNeXt50")
SEResNeXt101 = named_builder("seresnext101", "SEResNeXt101")
preprocess_input, decode_predictions = preprocessing_functions("torch")
