"""PointwiseConv2D: Keras' 1×1 `Conv2D`, whose training step on TensorFlow's Eigen kernels is
a matrix product.

TensorFlow's Eigen CPU kernels differentiate a 1×1 convolution slower than the same matrix
product (docs/performance.md). A subclass
of `Conv2D` rather than a `GroupConv2D`, so that its variables, weights files and training
checkpoints stay those of the `Conv2D` it replaces in the ResNet family. For the same reason
the class itself is named `Conv2D` (exported as `PointwiseConv2D`): Keras' `.weights.h5` files
key each layer by its class name and rank among layers of that class, so a run's
`final.weights.h5` written by an earlier version, whose 1×1 convs were `keras.layers.Conv2D`,
loads unchanged (tests/test_layers.py).
"""

import keras
from keras import ops

from sknet_keras.layers.accel import conv_paths


@keras.saving.register_keras_serializable(package="sknet_keras")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` restricted to 1×1, ungrouped, undilated, NHWC, "valid"; it
    computes what `Conv2D` computes, with the formulation `conv_paths.conv_path` picks."""

    def __init__(self, filters, kernel_size=1, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if (tuple(self.kernel_size) != (1, 1) or self.groups != 1
                or max(self.dilation_rate) != 1 or self.padding != "valid"
                or self.data_format != "channels_last"):
            raise ValueError(
                f"{self.name}: PointwiseConv2D is a 1×1, ungrouped, undilated, 'valid', "
                f"channels_last convolution; got kernel_size {self.kernel_size}, groups "
                f"{self.groups}, dilation_rate {self.dilation_rate}, padding {self.padding!r}, "
                f"data_format {self.data_format!r}")

    def call(self, inputs, training=None):
        path = conv_paths.conv_path(1, inputs.shape[-1], (1, 1), self.compute_dtype,
                                    self.filters, (1, 1), bool(training))
        if path != "matmul":
            return super().call(inputs)
        y = conv_paths.in_compute_precision(
            lambda x, k: conv_paths.pointwise_matmul(x, k, self.strides),
            inputs, ops.cast(self.kernel, self.compute_dtype), self.compute_dtype)
        if self.use_bias:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return self.activation(y) if self.activation is not None else y


PointwiseConv2D = Conv2D
