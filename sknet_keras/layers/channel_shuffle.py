"""Channel split and channel shuffle, the two data movements of a ShuffleNetV2 unit.

Keras ops only (reshape / transpose / split), so they run on every backend.
"""

import keras
from keras import ops

_register = keras.saving.register_keras_serializable(package="sknet_keras")


@_register
class ChannelSplit(keras.layers.Layer):
    """Halves of the channels, [first, second] (torchvision's `x.chunk(2, dim=1)`)."""

    def call(self, x):
        return ops.split(x, 2, axis=-1)

    def compute_output_shape(self, input_shape):
        half = tuple(input_shape[:-1]) + (input_shape[-1] // 2,)
        return [half, half]


@_register
class ChannelShuffle(keras.layers.Layer):
    """Output channel i·g + j is input channel j·(C/g) + i: PyTorch's view-transpose-view."""

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        if self.groups < 1:
            raise ValueError(f"groups must be positive; got {groups}")

    def call(self, x):
        shape, channels = ops.shape(x), x.shape[-1]
        x = ops.reshape(x, (-1, shape[1], shape[2], self.groups, channels // self.groups))
        x = ops.transpose(x, (0, 1, 2, 4, 3))
        return ops.reshape(x, (-1, shape[1], shape[2], channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}
