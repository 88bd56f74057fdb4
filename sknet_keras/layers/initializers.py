"""Default initializers shared by the layers and the model builders."""

import keras


def conv_kernel_initializer():
    """He (Kaiming) normal with fan-out, the ResNet/ResNeXt/SKNet reference initialization."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


# PyTorch's BN momentum 0.1 is Keras' 0.9; epsilon 1e-5 everywhere (docs/architecture.md).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
