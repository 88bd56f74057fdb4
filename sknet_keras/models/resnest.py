"""The ResNeSt family (Zhang et al. 2020, "ResNeSt: Split-Attention Networks"), in timm's
layout (`timm/models/resnest.py`): SKNet's successor, whose units select over radix splits
inside cardinal groups (`layers.SplitAttention`).

A ResNeSt is a ResNet-D: the deep stem (3×3 convs of `stem_width`, `stem_width`,
2·`stem_width` channels, then the 3×3/2 max pool, as the ResNet family's deep stem), strided
shortcuts that average-pool 2×2 before their 1×1 conv ("avg_down"), and bottleneck units
whose 3×3 is a split-attention conv. The stride of a unit's 3×3 moves to a 3×3/2 average pool
("avd") after it, or before it with `avd_first`. Stage s has `planes[s]` (64·2**s in every
published ResNeSt), a bottleneck width int(planes · base_width / 64) · cardinality and
4 · planes output channels.

Layer names follow the ResNet family: `conv1_{1,2,3}_*`, then `conv{stage}_block{unit}_*` with
`_1` the 1×1 reduce, `_2_splat` the split-attention conv, `_2_avd` its pool, `_3` the 1×1
expand, `_0_pool` / `_0_conv` / `_0_bn` the shortcut. docs/models/resnest.md has the layout,
the counts and the mapping onto timm.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

from keras import layers

from sknet_keras.layers import BatchNorm, PointwiseConv2D, SplitAttention
from sknet_keras.layers.initializers import BN_EPSILON, BN_MOMENTUM, conv_kernel_initializer
from sknet_keras.models.entry import Entry, Family, Paper
from sknet_keras.models.resnet.builder import pyramid_taps, stem
from sknet_keras.models.resnet.config import units


@dataclasses.dataclass(frozen=True)
class ResNeStConfig:
    """A ResNeSt: depths per stage, split-attention radix and cardinality, bottleneck width
    per group (`base_width`, of 64 planes), stem width, where the avd pool sits."""

    family = "resnest"
    stem = "deep"  # read by the ResNet family's stem and pyramid taps
    stem_pool = "symmetric"

    name: str
    depths: Tuple[int, ...]
    stem_width: int = 32
    base_width: int = 64
    cardinality: int = 1
    radix: int = 2
    avd_first: bool = False
    planes: Tuple[int, ...] = (64, 128, 256, 512)  # per stage (timm's are fixed)
    dropout: float = 0.0
    default_size: int = 224
    min_size: int = 32

    def __post_init__(self):
        if not self.depths or min(self.depths) < 1:
            raise ValueError(f"every stage needs at least one unit; got depths={self.depths}")
        if len(self.planes) != len(self.depths):
            raise ValueError(f"planes needs one entry per stage; got {self.planes} for "
                             f"depths {self.depths}")
        if min(self.stem_width, self.base_width, self.cardinality, self.radix) < 1:
            raise ValueError("stem_width, base_width, cardinality and radix must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")

    # What `resnet.units` and the ResNet stem read.
    @property
    def widths(self):
        return tuple(int(p * self.base_width / 64) * self.cardinality for p in self.planes)

    @property
    def out_channels(self):
        return tuple(4 * p for p in self.planes)

    reduce_widths = None

    @property
    def stem_out_channels(self):
        return 2 * self.stem_width

    def replace(self, **changes) -> "ResNeStConfig":
        return dataclasses.replace(self, **changes)


def _bn(name):
    return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _conv1x1(filters, name):
    return PointwiseConv2D(filters, 1, use_bias=False,
                           kernel_initializer=conv_kernel_initializer(), name=name)


def _avd(x, strides, name):
    """3×3 average pool, pad 1 counted as zeros (PyTorch's `AvgPool2d(3, s, padding=1)`)."""
    x = layers.ZeroPadding2D(1, name=name + "_pad")(x)
    return layers.AveragePooling2D(3, strides=strides, name=name)(x)


def _shortcut(x, unit, prefix):
    if not unit.has_shortcut_conv:
        return x
    if unit.strides > 1:
        # 2×2/2 average pool, ceil mode, padding not counted: "same" pads only at the end.
        x = layers.AveragePooling2D(unit.strides, padding="same", name=prefix + "_0_pool")(x)
    x = _conv1x1(unit.out_channels, prefix + "_0_conv")(x)
    return _bn(prefix + "_0_bn")(x)


def unit_block(x, config: ResNeStConfig, unit, prefix):
    """1×1 reduce → [avd] → split-attention 3×3 → [avd] → 1×1 expand → + shortcut → ReLU."""
    shortcut = _shortcut(x, unit, prefix)
    x = _conv1x1(unit.width, prefix + "_1_conv")(x)
    x = layers.ReLU(name=prefix + "_1_relu")(_bn(prefix + "_1_bn")(x))
    avd = unit.strides > 1
    if avd and config.avd_first:
        x = _avd(x, unit.strides, prefix + "_2_avd")
    x = SplitAttention(unit.width, radix=config.radix, groups=config.cardinality,
                       strides=1 if avd else unit.strides, return_attention=True,
                       name=prefix + "_2_splat")(x)[0]
    if avd and not config.avd_first:
        x = _avd(x, unit.strides, prefix + "_2_avd")
    x = _bn(prefix + "_3_bn")(_conv1x1(unit.out_channels, prefix + "_3_conv")(x))
    x = layers.Add(name=prefix + "_add")([shortcut, x])
    return layers.ReLU(name=prefix + "_out")(x)


def backbone(x, config: ResNeStConfig):
    """Deep stem and all stages; returns the last stage's feature map."""
    x = stem(x, config)
    for unit in units(config):
        x = unit_block(x, config, unit, unit.keras_prefix)
    return x


PAPER = "ResNeSt paper (Zhang et al. 2020)"
ENTRIES = (
    Entry(ResNeStConfig("resnest50d", depths=(3, 4, 6, 3)),
          "ResNeSt-50 (timm resnest50d: 2s1x64d, deep stem 32, avg-down)",
          Paper(params_m=27.5, source=PAPER)),
    Entry(ResNeStConfig("resnest101e", depths=(3, 4, 23, 3), stem_width=64, default_size=256),
          "ResNeSt-101 (timm resnest101e: 2s1x64d, deep stem 64, avg-down; 256 input)",
          Paper(params_m=48.3, source=PAPER)),
    Entry(ResNeStConfig("resnest50d_4s2x40d", depths=(3, 4, 6, 3), base_width=40,
                        cardinality=2, radix=4, avd_first=True),
          "ResNeSt-50 4s2x40d (the ResNeSt ablation: radix 4, cardinality 2, avd first)"),
    Entry(ResNeStConfig("resnest50d_1s4x24d", depths=(3, 4, 6, 3), base_width=24,
                        cardinality=4, radix=1, avd_first=True),
          "ResNeSt-50 1s4x24d (the ResNeSt ablation: radix 1 = sigmoid gate, cardinality 4)"),
)

CITATION = """@article{zhang2020resnest,
  title={ResNeSt: Split-Attention Networks},
  author={Zhang, Hang and Wu, Chongruo and Zhang, Zhongyue and Zhu, Yi and Lin, Haibin and
          Zhang, Zhi and Sun, Yue and He, Tong and Mueller, Jonas and Manmatha, R. and
          Li, Mu and Smola, Alexander},
  journal={arXiv preprint arXiv:2004.08955},
  year={2020}
}"""

FAMILY = Family(
    "resnest", ResNeStConfig, backbone, pyramid_taps, ENTRIES,
    converters={"timm": "sknet_keras.convert.resnest:resnest_timm_mapping"},
    timm_architectures={entry.name: entry.name for entry in ENTRIES},
    hub_name="ResNeSt", citation=CITATION)
