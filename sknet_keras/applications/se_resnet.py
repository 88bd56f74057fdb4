"""SE-ResNet-50/101/152 of the official SENet release (Caffe layout and weights)."""

from sknet_keras.applications.module_api import named_builder, preprocessing_functions

SEResNet50 = named_builder("seresnet50", "SEResNet50")
SEResNet101 = named_builder("seresnet101", "SEResNet101")
SEResNet152 = named_builder("seresnet152", "SEResNet152")
preprocess_input, decode_predictions = preprocessing_functions("senet")
