"""SK-ResNet-18/34 (timm's basic-block SK-ResNets, split input)."""

from sknet_keras.applications.module_api import named_builder, preprocessing_functions

SKResNet18 = named_builder("skresnet18", "SKResNet18")
SKResNet34 = named_builder("skresnet34", "SKResNet34")
preprocess_input, decode_predictions = preprocessing_functions("torch")
