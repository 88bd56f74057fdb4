"""Split attention (Zhang et al. 2020, ResNeSt): the SK select over `radix` splits inside
`groups` cardinal groups.

One grouped k×k convolution (groups × radix groups) makes radix × C channels, laid out
split-major (channels [r·C, (r+1)·C) are split r, as PyTorch's reshape to (N, radix, C)
reads them) → BN → ReLU. Fuse: the splits are summed, globally average-pooled, and passed
through a grouped 1×1 "fc1" with bias (→ BN → ReLU) and a grouped 1×1 "fc2" with bias to
radix × C logits, laid out group-major (group g's radix × C/groups logits are contiguous, as
the reference's rSoftMax views them). Select: a softmax over the radix axis (a sigmoid when
radix = 1), in float32 under mixed precision, weights the splits, which are summed.

Where SK convolution gives each branch the whole input and its own kernel and dilation, the
splits here are groups of one convolution, so each split sees 1/radix of the input channels.
docs/architecture.md has the layout and how it maps onto timm's `SplitAttn`.

With `return_attention=True` the layer returns `[V, a]`, a of shape (N, radix, C) in float32,
as `SelectiveKernel` does, so the attention analysis reads it the same way.
"""

import keras
from keras import ops

from sknet_keras.layers.batch_norm import BatchNorm
from sknet_keras.layers.channels import make_divisible
from sknet_keras.layers.group_conv import GroupConv2D
from sknet_keras.layers.initializers import BN_EPSILON, BN_MOMENTUM, conv_kernel_initializer

_register = keras.saving.register_keras_serializable(package="sknet_keras")


def radix_softmax(logits, radix, groups):
    """fc2's logits (N, radix·C), group-major → attention (N, radix, C) in float32: a softmax
    over the radix splits of each channel, or a sigmoid when radix is 1."""
    logits = ops.cast(logits, "float32")
    channels = logits.shape[-1] // radix
    if radix == 1:
        return ops.sigmoid(logits)[:, None, :]
    a = ops.softmax(ops.reshape(logits, (-1, groups, radix, channels // groups)), axis=2)
    return ops.reshape(ops.transpose(a, (0, 2, 1, 3)), (-1, radix, channels))


def default_attn_channels(filters, radix):
    """The fuse width of the reference: radix · C / 4 rounded to a multiple of 8, at least 32
    (timm's `make_divisible(in_channels * radix * 0.25, 8, min_value=32)` with in = out
    channels, as in every ResNeSt)."""
    return max(32, make_divisible(filters * radix / 4, 8))


@_register
class SplitAttention(keras.layers.Layer):
    """Split-attention convolution.

    Args:
        filters: output channels C; divisible by `groups`.
        radix: splits per cardinal group (R); 1 gives a sigmoid gate instead of a softmax.
        groups: cardinality (K).
        kernel_size, strides, dilation_rate: of the grouped convolution (symmetric padding).
        attn_channels: width of fc1; default `default_attn_channels(filters, radix)`.
        return_attention: return [V, attention (N, radix, C) float32] instead of V.
    """

    def __init__(self, filters, radix=2, groups=1, kernel_size=3, strides=1, dilation_rate=1,
                 attn_channels=None, return_attention=False, kernel_initializer=None,
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.radix, self.groups = int(filters), int(radix), int(groups)
        if min(self.filters, self.radix, self.groups) < 1:
            raise ValueError(f"filters, radix and groups must be positive; got {filters}, "
                             f"{radix}, {groups}")
        if self.filters % self.groups:
            raise ValueError(f"filters ({self.filters}) must be divisible by groups "
                             f"({self.groups})")
        self.kernel_size, self.strides = int(kernel_size), int(strides)
        self.dilation_rate = int(dilation_rate)
        self.attn_channels = int(attn_channels or default_attn_channels(self.filters, self.radix))
        if self.attn_channels % self.groups:
            raise ValueError(f"attn_channels ({self.attn_channels}) must be divisible by "
                             f"groups ({self.groups})")
        self.return_attention = bool(return_attention)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or conv_kernel_initializer())
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        common = dict(kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy)
        self.conv = GroupConv2D(self.radix * self.filters, self.kernel_size,
                                strides=self.strides, dilation_rate=self.dilation_rate,
                                groups=self.groups * self.radix,
                                kernel_initializer=self.kernel_initializer, name="conv", **common)
        self.bn0 = self._bn("bn0")
        self.fc1 = GroupConv2D(self.attn_channels, 1, groups=self.groups, use_bias=True,
                               name="fc1", **common)
        self.bn1 = self._bn("bn1")
        self.fc2 = GroupConv2D(self.radix * self.filters, 1, groups=self.groups, use_bias=True,
                               name="fc2", **common)

    def _bn(self, name):
        return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype_policy,
                         name=name)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel dimension of the input must be known")
        if channels % (self.groups * self.radix):
            raise ValueError(f"{self.name}: input channels ({channels}) must be divisible by "
                             f"groups × radix ({self.groups * self.radix})")
        self.conv.build(input_shape)
        self.bn0.build(self.conv.compute_output_shape(input_shape))
        self.fc1.build((None, 1, 1, self.filters))
        self.bn1.build((None, 1, 1, self.attn_channels))
        self.fc2.build((None, 1, 1, self.attn_channels))

    def call(self, inputs, training=None):
        x = ops.relu(self.bn0(self.conv(inputs), training=training))
        splits = ops.split(x, self.radix, axis=-1) if self.radix > 1 else [x]
        u = splits[0]
        for s in splits[1:]:
            u = u + s
        s = ops.mean(u, axis=(1, 2), keepdims=True)
        z = ops.relu(self.bn1(self.fc1(s), training=training))
        attention = radix_softmax(ops.reshape(self.fc2(z), (-1, self.radix * self.filters)),
                                  self.radix, self.groups)
        weights = ops.cast(attention, x.dtype)
        v = splits[0] * weights[:, None, None, 0, :]
        for r in range(1, self.radix):
            v = v + splits[r] * weights[:, None, None, r, :]
        return [v, attention] if self.return_attention else v

    def compute_output_shape(self, input_shape):
        out = self.conv.compute_output_shape(input_shape)[:-1] + (self.filters,)
        if self.return_attention:
            return [out, (input_shape[0], self.radix, self.filters)]
        return out

    def compute_output_spec(self, inputs, training=None):
        shapes = self.compute_output_shape(inputs.shape)
        if self.return_attention:
            return [keras.KerasTensor(shapes[0], dtype=self.compute_dtype),
                    keras.KerasTensor(shapes[1], dtype="float32")]
        return keras.KerasTensor(shapes, dtype=self.compute_dtype)

    def count_macs(self, input_shape):
        pooled = (None, 1, 1, self.filters)
        return (self.conv.count_macs(input_shape) + self.fc1.count_macs(pooled)
                + self.fc2.count_macs((None, 1, 1, self.attn_channels)))

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, radix=self.radix, groups=self.groups,
            kernel_size=self.kernel_size, strides=self.strides,
            dilation_rate=self.dilation_rate, attn_channels=self.attn_channels,
            return_attention=self.return_attention,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer))
        return config
