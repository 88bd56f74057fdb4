"""ShuffleNetV2 0.5× / 1.0× (torchvision's layout and ImageNet weights) and their +SE / +SK
variants of the SKNet paper (Table 4; no public weights)."""

from sknet_keras.applications.module_api import named_builder, preprocessing_functions

ShuffleNetV2x05 = named_builder("shufflenet_v2_x0_5", "ShuffleNetV2x05")
ShuffleNetV2x10 = named_builder("shufflenet_v2_x1_0", "ShuffleNetV2x10")
ShuffleNetV2x05SE = named_builder("shufflenet_v2_x0_5_se", "ShuffleNetV2x05SE")
ShuffleNetV2x10SE = named_builder("shufflenet_v2_x1_0_se", "ShuffleNetV2x10SE")
ShuffleNetV2x05SK = named_builder("shufflenet_v2_x0_5_sk", "ShuffleNetV2x05SK")
ShuffleNetV2x10SK = named_builder("shufflenet_v2_x1_0_sk", "ShuffleNetV2x10SK")
preprocess_input, decode_predictions = preprocessing_functions("torch")
