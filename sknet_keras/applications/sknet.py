"""SKNet-26/50/101 (ResNeXt bottlenecks with SK convolutions; timm layout)."""

from sknet_keras.applications.module_api import named_builder, preprocessing_functions

SKNet26 = named_builder("sknet26", "SKNet26")
SKNet50 = named_builder("sknet50", "SKNet50")
SKNet101 = named_builder("sknet101", "SKNet101")
preprocess_input, decode_predictions = preprocessing_functions("torch")
