"""SE-BN-Inception of the official SENet release (Caffe layout, pooling and weights)."""

from sknet_keras.applications.module_api import named_builder, preprocessing_functions

SEBNInception = named_builder("se_bn_inception", "SEBNInception")
preprocess_input, decode_predictions = preprocessing_functions("senet")
