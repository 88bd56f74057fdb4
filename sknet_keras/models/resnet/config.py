"""Configuration of the ResNet family: ResNeXt, SE-ResNeXt, SKNet, SK-ResNet, SE-ResNet,
SENet-154 and the CIFAR ResNeXt-29 networks are all stem → stages of residual units → head.

docs/architecture.md describes the layouts these switches select.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from sknet_keras.layers.channels import attn_channels

# (kernel_size, dilation, groups); groups=None means "the unit's cardinality".
Branch = Tuple[int, int, Optional[int]]

BLOCK_TYPES = ("bottleneck", "basic")
ATTENTION_TYPES = (None, "sk", "se")
STEM_POOL_PADDINGS = ("symmetric", "caffe")
STEM_TYPES = ("7x7", "deep", "cifar")


@dataclasses.dataclass(frozen=True)
class SKConfig:
    """Selective-kernel settings of a network.

    d = `attn_channels(C, reduction, min_attn_channels, attn_divisor)`: with the paper's
    r=16, L=32, divisor 1 that is max(C/r, L); timm's SK-ResNets use r=8, L=16, divisor 16.
    `stage_attn_channels` overrides d per stage (the released Caffe SKNet-101 uses d=16 in
    conv3). `attention=False` sums the branches (the paper's ablation).
    """

    branches: Tuple[Branch, ...] = ((3, 1, None), (3, 2, None))
    reduction: int = 16
    min_attn_channels: int = 32
    attn_divisor: int = 1
    attention: bool = True
    split_input: bool = False
    stage_attn_channels: Optional[Tuple[Optional[int], ...]] = None

    def attn_channels(self, channels: int, stage: int) -> int:
        """d for a unit of `channels` output channels in stage `stage` (0-based)."""
        if self.stage_attn_channels is not None:
            override = self.stage_attn_channels[stage]
            if override is not None:
                return int(override)
        return attn_channels(channels, self.reduction, self.min_attn_channels,
                             self.attn_divisor)


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """A ResNet-family network: stem, stages of units, head.

    widths: per stage, the width of the 3×3 / SK convolution. out_channels: per stage, the
    unit's output width. reduce_widths: per stage, the width of the bottleneck's 1×1 reduce
    (default: `widths`; SENet-154 reduces to half the 3×3 width). groups: cardinality of the
    3×3 (and of SK branches that do not name their own).

    Layout switches of the official SENet release: `stride_in_reduce` puts a stage's stride
    on the 1×1 reduce instead of the 3×3 (SE-ResNet, the original Caffe ResNet layout);
    `stem="deep"` is three 3×3 convs (64, 64, 128; SENet-154); `shortcut_kernel` is the
    kernel of the strided shortcut projections (SENet-154: 3, pad 1); `stem_pool="caffe"` is
    Caffe's ceil-mode max pool. `stem="cifar"`: one 3×3 conv, no pool (CIFAR networks).
    `dropout` is applied before the classifier.
    """

    family = "resnet"

    name: str
    block: str
    depths: Tuple[int, ...]
    widths: Tuple[int, ...]
    out_channels: Tuple[int, ...]
    groups: int = 1
    attention: Optional[str] = None
    sk: SKConfig = SKConfig()
    se_reduction: int = 16
    stem_width: int = 64
    stem_pool: str = "symmetric"
    stem: str = "7x7"
    reduce_widths: Optional[Tuple[int, ...]] = None
    stride_in_reduce: bool = False
    shortcut_kernel: int = 1
    dropout: float = 0.0
    default_size: int = 224
    min_size: int = 32

    def __post_init__(self):
        if self.block not in BLOCK_TYPES:
            raise ValueError(f"block must be one of {BLOCK_TYPES}; got {self.block!r}")
        if self.attention not in ATTENTION_TYPES:
            raise ValueError(
                f"attention must be one of {ATTENTION_TYPES}; got {self.attention!r}"
            )
        if self.stem_pool not in STEM_POOL_PADDINGS:
            raise ValueError(
                f"stem_pool must be one of {STEM_POOL_PADDINGS}; got {self.stem_pool!r}"
            )
        if self.stem not in STEM_TYPES:
            raise ValueError(f"stem must be one of {STEM_TYPES}; got {self.stem!r}")
        if self.shortcut_kernel not in (1, 3):
            raise ValueError(f"shortcut_kernel must be 1 or 3; got {self.shortcut_kernel!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")
        n = len(self.depths)
        reduce_widths = self.widths if self.reduce_widths is None else self.reduce_widths
        if not (len(self.widths) == len(self.out_channels) == len(reduce_widths) == n) or n == 0:
            raise ValueError(
                "depths, widths, reduce_widths and out_channels need one entry per stage; got "
                f"{self.depths}, {self.widths}, {self.reduce_widths}, {self.out_channels}"
            )
        if self.block == "basic" and (self.reduce_widths is not None or self.stride_in_reduce):
            raise ValueError("reduce_widths and stride_in_reduce apply to bottleneck units only")
        if any(d < 1 for d in self.depths):
            raise ValueError(f"every stage needs at least one unit; got depths={self.depths}")

    @property
    def stem_out_channels(self) -> int:
        return 2 * self.stem_width if self.stem == "deep" else self.stem_width

    def replace(self, **changes) -> "ResNetConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Unit:
    """One residual unit: where it sits and what it does to shapes."""

    stage: int  # 0-based; the papers' conv{stage + 2}
    index: int  # 0-based within the stage
    width: int
    out_channels: int
    strides: int
    has_shortcut_conv: bool
    reduce_width: int = 0  # bottleneck 1×1 reduce width

    @property
    def keras_prefix(self):
        return f"conv{self.stage + 2}_block{self.index + 1}"


def units(config: ResNetConfig):
    """Every unit of a network in order. The stride-2 of a stage sits on its first unit
    (stages after the first); a shortcut projection appears where the stride or the width
    changes."""
    channels = config.stem_out_channels
    reduce_widths = config.reduce_widths or config.widths
    for stage, (depth, width, rd, out) in enumerate(
            zip(config.depths, config.widths, reduce_widths, config.out_channels)):
        for index in range(depth):
            strides = 2 if (index == 0 and stage > 0) else 1
            yield Unit(stage, index, width, out, strides, strides != 1 or channels != out, rd)
            channels = out
