"""ResNeSt-50 / 101 and the ResNeSt-50 ablations (split attention; timm layout)."""

from sknet_keras.applications.module_api import named_builder, preprocessing_functions

ResNeSt50d = named_builder("resnest50d", "ResNeSt50d")
ResNeSt101e = named_builder("resnest101e", "ResNeSt101e")
ResNeSt50d4s2x40d = named_builder("resnest50d_4s2x40d", "ResNeSt50d4s2x40d")
ResNeSt50d1s4x24d = named_builder("resnest50d_1s4x24d", "ResNeSt50d1s4x24d")
preprocess_input, decode_predictions = preprocessing_functions("torch")
