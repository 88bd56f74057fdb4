"""The ResNet family's builder: stem → units → feature map, with stable layer names.

Layer names follow `keras.applications.resnet`: `conv1_conv`, `pool1_pool`, then
`conv{stage}_block{unit}_{i}_{op}` with stage 2..5 as in the papers, e.g. `conv3_block4_2_sk`
is the paper's SK_3_4. Padding is explicit and symmetric wherever a stride is 2 so that
PyTorch (timm) and Caffe weights load one to one (docs/architecture.md).
"""

from keras import layers

from sknet_keras.layers import (BatchNorm, GroupConv2D, PointwiseConv2D, SelectiveKernel,
                                SqueezeExcite)
from sknet_keras.layers.initializers import BN_EPSILON, BN_MOMENTUM, conv_kernel_initializer
from sknet_keras.models.resnet.config import ResNetConfig, units


def _bn(name):
    return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _conv1x1(filters, name, strides=1):
    return PointwiseConv2D(filters, 1, strides=strides, use_bias=False,
                           kernel_initializer=conv_kernel_initializer(), name=name)


def stem(x, config: ResNetConfig):
    """7×7/2 conv → BN → ReLU → 3×3/2 max pool (timm: pad 1; Caffe: ceil mode = pad 0,1).

    The deep stem (SENet-154) replaces the 7×7 by three 3×3 conv → BN → ReLU (64/2, 64, 128),
    named conv1_1 .. conv1_3 as in the release. The CIFAR stem is one 3×3/1 conv → BN → ReLU
    and no pool.
    """
    if config.stem == "cifar":
        x = GroupConv2D(config.stem_width, 3, name="conv1_conv")(x)
        x = _bn("conv1_bn")(x)
        return layers.ReLU(name="conv1_relu")(x)
    if config.stem == "deep":
        widths = (config.stem_width, config.stem_width, 2 * config.stem_width)
        for i, width in enumerate(widths, start=1):
            x = GroupConv2D(width, 3, strides=2 if i == 1 else 1, name=f"conv1_{i}_conv")(x)
            x = _bn(f"conv1_{i}_bn")(x)
            x = layers.ReLU(name=f"conv1_{i}_relu")(x)
    else:
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = layers.Conv2D(config.stem_width, 7, strides=2, use_bias=False,
                          kernel_initializer=conv_kernel_initializer(), name="conv1_conv")(x)
        x = _bn("conv1_bn")(x)
        x = layers.ReLU(name="conv1_relu")(x)
    # Zero padding equals -inf padding here: the input is post-ReLU, so >= 0.
    pad = 1 if config.stem_pool == "symmetric" else ((0, 1), (0, 1))
    x = layers.ZeroPadding2D(pad, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def _spatial_mixer(x, config, stage, filters, strides, prefix):
    """The unit's k×k part: SK convolution, or grouped 3×3 → BN → ReLU."""
    if config.attention == "sk":
        sk = config.sk
        out = SelectiveKernel(
            filters,
            branches=sk.branches,
            groups=config.groups,
            attn_channels=sk.attn_channels(filters, stage),
            strides=strides,
            attention=sk.attention,
            split_input=sk.split_input,
            return_attention=sk.attention,
            name=prefix + "_sk",
        )(x)
        return out[0] if sk.attention else out
    x = GroupConv2D(filters, 3, strides=strides, groups=config.groups, name=prefix + "_conv")(x)
    x = _bn(prefix + "_bn")(x)
    return layers.ReLU(name=prefix + "_relu")(x)


def _shortcut(x, config, unit, prefix):
    if not unit.has_shortcut_conv:
        return x
    if config.shortcut_kernel == 3 and unit.strides > 1:  # SENet-154: 3×3/2, pad 1
        x = GroupConv2D(unit.out_channels, 3, strides=unit.strides, name=prefix + "_0_conv")(x)
    else:
        x = _conv1x1(unit.out_channels, prefix + "_0_conv", strides=unit.strides)(x)
    return _bn(prefix + "_0_bn")(x)


def _finish_unit(x, shortcut, config, prefix):
    if config.attention == "se":
        x = SqueezeExcite(config.se_reduction, name=prefix + "_se")(x)
    x = layers.Add(name=prefix + "_add")([shortcut, x])
    return layers.ReLU(name=prefix + "_out")(x)


def bottleneck_unit(x, config, unit, prefix):
    """1×1 reduce → [grouped 3×3 | SK] (carries the stride) → 1×1 expand → [SE] → + → ReLU.

    With `config.stride_in_reduce` (SE-ResNet release) the 1×1 reduce carries the stride.
    """
    shortcut = _shortcut(x, config, unit, prefix)
    reduce_strides, mixer_strides = ((unit.strides, 1) if config.stride_in_reduce
                                     else (1, unit.strides))
    x = _conv1x1(unit.reduce_width, prefix + "_1_conv", strides=reduce_strides)(x)
    x = _bn(prefix + "_1_bn")(x)
    x = layers.ReLU(name=prefix + "_1_relu")(x)
    x = _spatial_mixer(x, config, unit.stage, unit.width, mixer_strides, prefix + "_2")
    x = _conv1x1(unit.out_channels, prefix + "_3_conv")(x)
    x = _bn(prefix + "_3_bn")(x)
    return _finish_unit(x, shortcut, config, prefix)


def basic_unit(x, config, unit, prefix):
    """[3×3 | SK] (carries the stride) → 3×3 → BN → [SE] → + → ReLU."""
    shortcut = _shortcut(x, config, unit, prefix)
    x = _spatial_mixer(x, config, unit.stage, unit.width, unit.strides, prefix + "_1")
    x = GroupConv2D(unit.out_channels, 3, name=prefix + "_2_conv")(x)
    x = _bn(prefix + "_2_bn")(x)
    return _finish_unit(x, shortcut, config, prefix)


UNITS = {"bottleneck": bottleneck_unit, "basic": basic_unit}


def pyramid_taps(config: ResNetConfig):
    """{level: layer name}: the stem's ReLU and each stage's last unit output, at stride
    2**level (the CIFAR stem does not downsample: its stages sit at levels 0, 1, 2)."""
    if config.stem == "cifar":
        taps, level = {0: "conv1_relu"}, 0
    else:
        taps, level = {1: "conv1_3_relu" if config.stem == "deep" else "conv1_relu"}, 2
    for unit in units(config):
        level += unit.strides == 2
        taps[level] = unit.keras_prefix + "_out"
    return taps


def backbone(x, config: ResNetConfig):
    """Stem and all stages; returns the last stage's feature map."""
    x = stem(x, config)
    build_unit = UNITS[config.block]
    for unit in units(config):
        x = build_unit(x, config, unit, unit.keras_prefix)
    return x
