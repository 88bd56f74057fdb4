"""GroupConv2D: k×k convolution with groups, dilation, stride and symmetric padding.

Written by hand because Keras' `Conv2D` falls short here in three ways:
- it refuses `strides > 1` together with `dilation_rate > 1` (SK's strided dilated branch);
- `padding="same"` pads asymmetrically at stride 2, so converted PyTorch / Caffe weights
  would give shifted outputs; this layer pads symmetrically, as those frameworks do;
- grouped convolutions need a formulation per backend and CPU kernel set (TensorFlow's Eigen
  kernels cannot differentiate grouped or dilated convolutions at all; XLA's CPU backend
  differentiates a grouped conv far slower than one conv per group). The layer asks
  `accel.conv_paths` which formulation runs (the table in `sknet_keras.layers.accel`).

Strided dilated convolutions are computed exactly and cheaply (docs/architecture.md): when the
dilation is a multiple of the stride, a stride-s, dilation-d, pad-p conv equals a stride-1,
dilation-d/s, pad-p/s conv over `x[:, ::s, ::s]`; otherwise a stride-1 conv is subsampled.
Subsampling is a 1×1 strided max pool: exactly `x[:, ::s, ::s]`, and on TensorFlow's CPU
kernels much faster than the strided slice.
"""

import keras
from keras import ops

from sknet_keras.layers.accel import conv_paths, keras_conv
from sknet_keras.layers.initializers import conv_kernel_initializer

_register = keras.saving.register_keras_serializable(package="sknet_keras")


def _as_pair(value, name):
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints; got {value!r}")
    return value


def conv_plan(kernel_size, strides, dilation_rate, padding):
    """How to run a conv: (subsample_before, dilation, padding, stride, subsample_after).

    Per spatial axis; all values exact reformulations of the requested convolution.
    """
    plan = []
    for k, s, d, p in zip(kernel_size, strides, dilation_rate, padding):
        if s > 1 and d > 1:
            if d % s == 0 and p % s == 0:
                plan.append((s, d // s, p // s, 1, 1))
            else:
                plan.append((1, d, p, 1, s))
        else:
            plan.append((1, d, p, s, 1))
    return plan


@_register
class GroupConv2D(keras.layers.Layer):
    """k×k convolution with groups, dilation, stride and symmetric zero padding (NHWC).

    Args:
        filters: output channels; divisible by `groups`.
        kernel_size, strides, dilation_rate: int or pair.
        groups: input and output channels are split into this many groups.
        padding: int or pair of symmetric padding; default `dilation * (k - 1) // 2`,
            the PyTorch/Caffe convention (keeps size at stride 1).
        use_bias: add a bias (ResNeXt/SKNet convs have none; BN follows).
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        dilation_rate=1,
        groups=1,
        padding=None,
        use_bias=False,
        kernel_initializer=None,
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _as_pair(kernel_size, "kernel_size")
        self.strides = _as_pair(strides, "strides")
        self.dilation_rate = _as_pair(dilation_rate, "dilation_rate")
        self.groups = int(groups)
        if padding is None:
            padding = tuple(d * (k - 1) // 2 for k, d in zip(self.kernel_size, self.dilation_rate))
        self.padding = _as_pair(padding, "padding")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or conv_kernel_initializer()
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        if self.filters < 1 or self.groups < 1:
            raise ValueError(f"filters and groups must be positive; got {filters}, {groups}")
        if self.filters % self.groups:
            raise ValueError(
                f"filters ({self.filters}) must be divisible by groups ({self.groups})"
            )
        if min(self.kernel_size + self.strides + self.dilation_rate) < 1 or min(self.padding) < 0:
            raise ValueError(
                "kernel_size, strides and dilation_rate must be >= 1 and padding >= 0; got "
                f"{self.kernel_size}, {self.strides}, {self.dilation_rate}, {self.padding}"
            )
        self._plan = conv_plan(self.kernel_size, self.strides, self.dilation_rate, self.padding)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel dimension of the input must be known")
        if channels % self.groups:
            raise ValueError(
                f"{self.name}: input channels ({channels}) must be divisible by "
                f"groups ({self.groups})"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
            if self.use_bias
            else None
        )

    def call(self, inputs, training=None):
        (sub_h, dil_h, pad_h, st_h, post_h), (sub_w, dil_w, pad_w, st_w, post_w) = self._plan
        x = inputs
        x = conv_paths.subsample(x, sub_h, sub_w)
        # At stride 1 with pad = dilation·(k−1)/2, "SAME" is exactly our symmetric padding and
        # saves materializing (and, in training, keeping for the backward) a padded copy.
        same = (st_h == st_w == 1
                and 2 * pad_h == dil_h * (self.kernel_size[0] - 1)
                and 2 * pad_w == dil_w * (self.kernel_size[1] - 1))
        if not same and (pad_h or pad_w):
            # Explicit pad + VALID: symmetric like PyTorch/Caffe, and measured faster on CPU
            # than tf.nn.conv2d's own explicit padding for dilated convs.
            x = ops.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
        padding = "SAME" if same else "VALID"
        kernel = ops.cast(self.kernel, self.compute_dtype)
        path = conv_paths.conv_path(self.groups, inputs.shape[-1], (dil_h, dil_w),
                                    self.compute_dtype, self.filters, self.kernel_size,
                                    bool(training))
        if keras.backend.backend() != "tensorflow":
            y = keras_conv.conv(path, x, kernel, self.groups, (st_h, st_w), (dil_h, dil_w),
                            padding)
        else:
            y = conv_paths.in_compute_precision(lambda x, k: conv_paths.tf_conv(
                path, x, k, self.groups, (st_h, st_w), (dil_h, dil_w), padding,
                self.kernel_size, bool(training)), x, kernel, self.compute_dtype)
        y = conv_paths.subsample(y, post_h, post_w)
        if self.bias is not None:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return y

    def compute_output_shape(self, input_shape):
        def out(size, k, s, d, p):
            if size is None:
                return None
            return (size + 2 * p - d * (k - 1) - 1) // s + 1

        h = out(input_shape[1], self.kernel_size[0], self.strides[0], self.dilation_rate[0],
                self.padding[0])
        w = out(input_shape[2], self.kernel_size[1], self.strides[1], self.dilation_rate[1],
                self.padding[1])
        return (input_shape[0], h, w, self.filters)

    def count_macs(self, input_shape):
        _, h, w, _ = self.compute_output_shape(input_shape)
        k = self.kernel_size[0] * self.kernel_size[1]
        return h * w * k * (input_shape[-1] // self.groups) * self.filters

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            groups=self.groups,
            padding=self.padding,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config
