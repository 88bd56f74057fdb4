"""The ShuffleNetV2 family: torchvision's 0.5× / 1.0× baselines and the SKNet paper's +SE and
+SK variants (Li et al. 2019, Table 4). docs/models/shufflenet_v2.md has the architecture,
the readings chosen where the paper leaves the construction open, and the counts.

Layer names follow the keras.applications style of the ResNet family: `conv1_*`, `pool1_*`,
then `conv{stage}_block{unit}_*` with stage 2..4 as in the ShuffleNetV2 paper and unit
1-based, then `conv5_*`. In a unit, `_1` / `_2` / `_3` are the main branch's 1×1, 3×3
depthwise (or `_2_sk`) and 1×1; `_0_dw` / `_0` the downsampling unit's other branch
(depthwise 3×3/2, 1×1). So `conv3_block4_2_sk` maps to the paper's SK_3_4 in
`sknet_keras.analysis`; `conv3_block1_0_dw_sk` keeps its own name there.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Tuple

from keras import layers

from sknet_keras.layers import (BatchNorm, ChannelShuffle, ChannelSplit, GroupConv2D,
                                SelectiveKernel, SqueezeExcite)
from sknet_keras.layers.initializers import BN_EPSILON, BN_MOMENTUM, conv_kernel_initializer
from sknet_keras.models.entry import Entry, Family, Paper

ATTENTION_TYPES = (None, "se", "sk")


@dataclasses.dataclass(frozen=True)
class ShuffleNetV2Config:
    """A ShuffleNetV2: 3×3/2 stem conv, 3×3/2 max pool, stages of shuffle units, 1×1 conv5.

    widths: per stage, the units' output channels (each branch carries half). repeats: units
    per stage; the first of each stage has stride 2. attention "se": an SE block ends every
    main branch; "sk": SK convolutions (M branches `sk_branches`, depthwise groups,
    d = max(C / sk_reduction, sk_min_attn_channels), `sk_branch_activation` after the branch
    BN) replace the depthwise 3×3 of every main branch, and with `sk_downsample_branch` that
    of the downsampling units' other branch too.
    """

    family = "shufflenet_v2"

    name: str
    widths: Tuple[int, ...]
    repeats: Tuple[int, ...] = (4, 8, 4)
    stem_width: int = 24
    head_width: int = 1024
    attention: Optional[str] = None
    se_reduction: int = 16
    sk_branches: Tuple[Tuple[int, int], ...] = ((3, 1), (3, 2))
    sk_reduction: int = 4
    sk_min_attn_channels: int = 32
    sk_branch_activation: Optional[str] = None
    sk_downsample_branch: bool = True
    dropout: float = 0.0
    default_size: int = 224
    min_size: int = 32

    def __post_init__(self):
        checks = (
            (self.attention in ATTENTION_TYPES,
             f"attention must be one of {ATTENTION_TYPES}; got {self.attention!r}"),
            (len(self.widths) == len(self.repeats) >= 1,
             f"widths and repeats need one entry per stage; got {self.widths}, {self.repeats}"),
            (all(w >= 2 and w % 2 == 0 for w in self.widths),
             f"stage widths must be even and >= 2 (two branches); got {self.widths}"),
            (all(r >= 1 for r in self.repeats),
             f"every stage needs at least one unit; got repeats={self.repeats}"),
            (min(self.stem_width, self.head_width, self.se_reduction, self.sk_reduction) >= 1,
             "stem_width, head_width, se_reduction and sk_reduction must be positive"),
            (self.sk_branch_activation in (None, "relu"),
             f"sk_branch_activation must be None or 'relu'; got {self.sk_branch_activation!r}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1); got {self.dropout!r}"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def replace(self, **changes) -> "ShuffleNetV2Config":
        return dataclasses.replace(self, **changes)


class Unit(NamedTuple):
    stage: int  # 0-based; the paper's Stage{stage + 2}
    index: int  # 0-based within the stage
    in_channels: int
    out_channels: int
    strides: int

    @property
    def prefix(self):
        return f"conv{self.stage + 2}_block{self.index + 1}"


def units(config: ShuffleNetV2Config):
    """Every shuffle unit in order (the converter walks the same list)."""
    channels = config.stem_width
    for stage, (repeats, width) in enumerate(zip(config.repeats, config.widths)):
        for index in range(repeats):
            yield Unit(stage, index, channels, width, 2 if index == 0 else 1)
            channels = width


def _bn(name):
    return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _pointwise(x, filters, prefix):
    """1×1 conv → BN → ReLU."""
    x = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=conv_kernel_initializer(),
                      name=prefix + "_conv")(x)
    x = _bn(prefix + "_bn")(x)
    return layers.ReLU(name=prefix + "_relu")(x)


def _depthwise(x, config, strides, prefix, sk):
    """3×3 depthwise conv → BN (no ReLU, as in ShuffleNetV2), or the SK convolution."""
    channels = x.shape[-1]
    if not sk:
        x = GroupConv2D(channels, 3, strides=strides, groups=channels, name=prefix + "_conv")(x)
        return _bn(prefix + "_bn")(x)
    return SelectiveKernel(
        channels, branches=config.sk_branches, groups=channels, reduction=config.sk_reduction,
        min_attn_channels=config.sk_min_attn_channels, strides=strides,
        branch_activation=config.sk_branch_activation, return_attention=True,
        name=prefix + "_sk")(x)[0]


def _main_branch(x, config, unit):
    """1×1 → BN → ReLU → depthwise 3×3 | SK (carries the stride) → 1×1 → BN → ReLU [→ SE]."""
    half, p = unit.out_channels // 2, unit.prefix
    x = _pointwise(x, half, p + "_1")
    x = _depthwise(x, config, unit.strides, p + "_2", sk=config.attention == "sk")
    x = _pointwise(x, half, p + "_3")
    if config.attention == "se":
        x = SqueezeExcite(config.se_reduction, name=p + "_se")(x)
    return x


def shuffle_unit(x, config, unit):
    """Stride 1: split, main branch on the second half. Stride 2: both branches see the whole
    input. Then concatenate [other, main] and shuffle the channels (groups 2)."""
    p = unit.prefix
    if unit.strides == 1:
        other, main = ChannelSplit(name=p + "_split")(x)
    else:
        sk = config.attention == "sk" and config.sk_downsample_branch
        other = _depthwise(x, config, unit.strides, p + "_0_dw", sk=sk)
        other, main = _pointwise(other, unit.out_channels // 2, p + "_0"), x
    x = layers.Concatenate(name=p + "_concat")([other, _main_branch(main, config, unit)])
    return ChannelShuffle(2, name=p + "_shuffle")(x)


def pyramid_taps(config: ShuffleNetV2Config):
    """{level: layer name} at stride 2**level: the stem conv, its max pool (stride 4), each
    stage's last unit (strides 8, 16, ...); the last level is `conv5_relu`, the 1×1 after
    the last stage, as timm and keras-hub take a network's final features."""
    taps = {1: "conv1_relu", 2: "pool1_pool"}
    for unit in units(config):
        taps[unit.stage + 3] = unit.prefix + "_shuffle"
    taps[len(config.repeats) + 2] = "conv5_relu"
    return taps


def backbone(x, config: ShuffleNetV2Config):
    """Stem, the shuffle units, conv5 (1×1 → BN → ReLU): everything before global pooling.

    Symmetric padding as PyTorch: GroupConv2D pads the stride-2 convs itself; the max pool's
    input is post-ReLU (>= 0), so zero padding equals PyTorch's -inf padding.
    """
    x = GroupConv2D(config.stem_width, 3, strides=2, name="conv1_conv")(x)
    x = layers.ReLU(name="conv1_relu")(_bn("conv1_bn")(x))
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for unit in units(config):
        x = shuffle_unit(x, config, unit)
    return _pointwise(x, config.head_width, "conv5")


WIDTHS = {"x0_5": ((48, 96, 192), "0.5x"), "x1_0": ((116, 232, 464), "1.0x")}
VARIANTS = {None: " (torchvision layout)",
            "se": " + SE on every main branch (SKNet paper Table 4)",
            "sk": " + SK[2 (3x3, 3x3 d2), depthwise, r=4] (SKNet paper Table 4)"}
TABLE4 = "SKNet paper Table 4 (MFLOPs)"
RELEASE = "ShuffleNetV2 authors' release, megvii-model/ShuffleNet-Series (MFLOPs)"
PAPER = {  # Table 4's other figures (params, top-1, 0.5x MFLOPs) are not in our sources
    ("x0_5", None): Paper(top1_error=38.9, params_m=1.4, gflops=41, source=RELEASE),
    ("x1_0", None): Paper(top1_error=30.6, params_m=2.3, gflops=146, source=RELEASE),
    ("x1_0", "se"): Paper(gflops=141.73, source=TABLE4),
    ("x1_0", "sk"): Paper(gflops=145.66, source=TABLE4),
}

ENTRIES = tuple(
    Entry(ShuffleNetV2Config("_".join(filter(None, ("shufflenet_v2", width, attention))),
                             widths=widths, attention=attention),
          f"ShuffleNetV2 {label}{VARIANTS[attention]}",
          PAPER.get((width, attention), Paper(source=TABLE4)))
    for attention in VARIANTS for width, (widths, label) in WIDTHS.items()
)

FAMILY = Family("shufflenet_v2", ShuffleNetV2Config, backbone, pyramid_taps, ENTRIES,
                converters={"torchvision": "sknet_keras.convert.torchvision:shufflenet_torchvision_mapping"},
                hub_name="ShuffleNetV2")
