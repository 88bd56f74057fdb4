"""ResNeXt-50/101 32x4d."""

from sknet_keras.applications.module_api import named_builder, preprocessing_functions

ResNeXt50 = named_builder("resnext50", "ResNeXt50")
ResNeXt101 = named_builder("resnext101", "ResNeXt101")
preprocess_input, decode_predictions = preprocessing_functions("torch")
