"""SqueezeExcite: the SE block of Hu et al. (SENet).

GAP → 1×1 conv C → C/r with bias → ReLU → 1×1 conv back to C with bias → sigmoid → scale.
On a pooled vector a 1×1 conv is a Dense layer, which is what we use.
"""

import keras
from keras import ops

_register = keras.saving.register_keras_serializable(package="sknet_keras")


@_register
class SqueezeExcite(keras.layers.Layer):
    """Channel attention by squeeze (global pool) and excitation (two FC layers).

    Args:
        reduction: r, the bottleneck is C / r channels (SENet: 16).
        rd_channels: set the bottleneck width directly instead.
    """

    def __init__(self, reduction=16, rd_channels=None, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.reduction = int(reduction)
        self.rd_channels = None if rd_channels is None else int(rd_channels)
        if self.reduction < 1 or (self.rd_channels is not None and self.rd_channels < 1):
            raise ValueError(
                f"reduction and rd_channels must be positive; got {reduction}, {rd_channels}"
            )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel dimension of the input must be known")
        width = self.rd_channels or max(1, channels // self.reduction)
        dense = dict(kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy)
        self.reduce = keras.layers.Dense(width, name="reduce", **dense)
        self.expand = keras.layers.Dense(channels, name="expand", **dense)
        self.reduce.build((None, channels))
        self.expand.build((None, width))

    def call(self, inputs):
        s = ops.mean(inputs, axis=(1, 2))
        s = ops.sigmoid(self.expand(ops.relu(self.reduce(s))))
        return inputs * s[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shape):
        return 2 * input_shape[-1] * self.reduce.units

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction=self.reduction,
            rd_channels=self.rd_channels,
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config
