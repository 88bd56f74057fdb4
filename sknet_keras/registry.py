"""The one place that defines every model.

A model is a `ModelConfig`: a few lines of configuration over the shared blocks in
`sknet_keras.applications.backbone`. The application builders, the command line, and
(later) the trainer, converters and benchmarks all look models up here, so adding a
variant (an ablation, a new depth) is a new entry, not new code.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

# (kernel_size, dilation, groups); groups=None means "the unit's cardinality".
Branch = Tuple[int, int, Optional[int]]

BLOCK_TYPES = ("bottleneck", "basic")
ATTENTION_TYPES = (None, "sk", "se")
STEM_POOL_PADDINGS = ("symmetric", "caffe")
STEM_TYPES = ("7x7", "deep")


@dataclasses.dataclass(frozen=True)
class SKConfig:
    """Selective-kernel settings of a network (SPEC §1).

    `attn_channels(C) = max(make_divisible(C / reduction, attn_divisor), min_attn_channels)`:
    with the paper's r=16, L=32, divisor 1 that is d = max(C/r, L); timm's SK-ResNets use
    r=8, L=16, divisor 16. `stage_attn_channels` overrides d per stage (the released Caffe
    SKNet-101 uses d=16 in conv3).
    """

    branches: Tuple[Branch, ...] = ((3, 1, None), (3, 2, None))
    reduction: int = 16
    min_attn_channels: int = 32
    attn_divisor: int = 1
    attention: bool = True
    split_input: bool = False
    stage_attn_channels: Optional[Tuple[Optional[int], ...]] = None


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Where `weights="imagenet"` comes from: a public release converted on first use.

    source: "timm" (safetensors) or "caffe" (caffemodel); url None means the file has no
    direct download and must be placed by hand (`page` says where to find it);
    preprocessing: the `mode` of `preprocess_input` the weights were trained with; top1: the
    published accuracy (%); sha256: checked after a download when known.
    """

    source: str
    file_name: str
    url: Optional[str] = None
    preprocessing: str = "torch"
    top1: Optional[float] = None
    sha256: Optional[str] = None
    page: Optional[str] = None


def _hf_timm(tag, top1=None):
    return Pretrained("timm", f"{tag}.safetensors",
                      f"https://huggingface.co/timm/{tag}/resolve/main/model.safetensors",
                      "torch", top1)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A ResNet-family network: stem, stages of units, head.

    widths: per stage, the width of the 3×3 / SK convolution. out_channels: per stage, the
    unit's output width. reduce_widths: per stage, the width of the bottleneck's 1×1 reduce
    (default: `widths`; SENet-154 reduces to half the 3×3 width).

    Layout switches of the official SENet release (hujie-frank/SENet): `stride_in_reduce`
    puts a stage's stride on the 1×1 reduce instead of the 3×3 (SE-ResNet, the original
    Caffe ResNet layout); `stem="deep"` is three 3×3 convs (64, 64, 128; SENet-154);
    `shortcut_kernel` is the kernel of the strided shortcut projections (SENet-154: 3, pad 1;
    a stride-1 projection stays 1×1); `dropout` is applied before the classifier.
    """

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
    # Literature numbers, for documentation only (never used to check ourselves).
    paper_top1_error: Optional[float] = None
    description: str = ""
    pretrained: Optional[Pretrained] = None

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

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm's channel rounding (round to nearest multiple, never drop >10%)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < round_limit * value:
        new += divisor
    return new


def sk_attn_channels(config: SKConfig, channels: int, stage: int) -> int:
    """d of SPEC §1 for a unit of `channels` output channels in stage `stage` (0-based)."""
    if config.stage_attn_channels is not None:
        override = config.stage_attn_channels[stage]
        if override is not None:
            return int(override)
    if config.attn_divisor <= 1:
        reduced = channels // config.reduction
    else:
        reduced = make_divisible(channels / config.reduction, config.attn_divisor)
    return max(reduced, config.min_attn_channels)


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


def units(config: ModelConfig):
    """Every unit of a network in order. The stride-2 of a stage sits on its first unit;
    a shortcut projection appears where the stride or the width changes."""
    channels = config.stem_out_channels
    reduce_widths = config.reduce_widths or config.widths
    for stage, (depth, width, rd, out) in enumerate(
            zip(config.depths, config.widths, reduce_widths, config.out_channels)):
        for index in range(depth):
            strides = 2 if (index == 0 and stage > 0) else 1
            yield Unit(stage, index, width, out, strides, strides != 1 or channels != out, rd)
            channels = out


_RESNEXT_32x4d = dict(
    block="bottleneck",
    widths=(128, 256, 512, 1024),
    out_channels=(256, 512, 1024, 2048),
    groups=32,
)
_SK_RESNET = dict(
    block="basic",
    widths=(64, 128, 256, 512),
    out_channels=(64, 128, 256, 512),
    attention="sk",
    sk=SKConfig(reduction=8, min_attn_channels=16, attn_divisor=16, split_input=True),
)

_SENET_PAGE = "https://github.com/hujie-frank/SENet#trained-models"
_SKNET_PAGE = "https://github.com/implus/SKNet"
# Mirrors of the SENet release's caffemodels used by OpenVINO's model zoo (direct links).
_OPENVINO = "https://storage.openvinotoolkit.org/repositories/open_model_zoo/public/2021.4"


def _senet_release(file_name, top1, mirror=None, sha256=None):
    url = f"{_OPENVINO}/{mirror}/{file_name}" if mirror else None
    return Pretrained("caffe", file_name, url, "senet", top1, sha256, _SENET_PAGE)


# The official SENet release (hujie-frank/SENet): Caffe layout, ceil-mode stem pool.
_SE_RESNET = dict(
    block="bottleneck",
    widths=(64, 128, 256, 512),
    out_channels=(256, 512, 1024, 2048),
    attention="se",
    stem_pool="caffe",
    stride_in_reduce=True,
)

MODELS = {
    c.name: c
    for c in (
        ModelConfig("sknet26", depths=(2, 2, 2, 2), attention="sk", paper_top1_error=22.74,
                    description="SKNet-26: SK[2,32,16] ResNeXt-26 32x4d", **_RESNEXT_32x4d),
        ModelConfig("sknet50", depths=(3, 4, 6, 3), attention="sk", paper_top1_error=20.79,
                    description="SKNet-50: SK[2,32,16] ResNeXt-50 32x4d",
                    pretrained=_hf_timm("skresnext50_32x4d.ra_in1k", 80.17), **_RESNEXT_32x4d),
        ModelConfig("sknet50_caffe", depths=(3, 4, 6, 3), attention="sk", stem_pool="caffe",
                    paper_top1_error=20.79,
                    description="SKNet-50, official Caffe release layout (ceil-mode max pool)",
                    pretrained=Pretrained("caffe", "SKNet-50.caffemodel", None, "caffe",
                                          page=_SKNET_PAGE),
                    **_RESNEXT_32x4d),
        ModelConfig("sknet101_caffe", depths=(3, 4, 23, 3), attention="sk", stem_pool="caffe",
                    sk=SKConfig(stage_attn_channels=(None, 16, None, None)),
                    paper_top1_error=20.19,
                    description="SKNet-101, official Caffe release layout (d=16 in conv3)",
                    pretrained=Pretrained("caffe", "SKNet-101.caffemodel", None, "caffe",
                                          page=_SKNET_PAGE),
                    **_RESNEXT_32x4d),
        ModelConfig("sknet101", depths=(3, 4, 23, 3), attention="sk", paper_top1_error=20.19,
                    description="SKNet-101: SK[2,32,16] ResNeXt-101 32x4d", **_RESNEXT_32x4d),
        ModelConfig("resnext50", depths=(3, 4, 6, 3), paper_top1_error=22.23,
                    description="ResNeXt-50 32x4d",
                    pretrained=_hf_timm("resnext50_32x4d.a1h_in1k"), **_RESNEXT_32x4d),
        ModelConfig("resnext101", depths=(3, 4, 23, 3), paper_top1_error=21.11,
                    description="ResNeXt-101 32x4d", **_RESNEXT_32x4d),
        ModelConfig("seresnext50", depths=(3, 4, 6, 3), attention="se", paper_top1_error=21.12,
                    description="SE-ResNeXt-50 32x4d (the SKNet paper's SENet-50)",
                    pretrained=_hf_timm("seresnext50_32x4d.racm_in1k"), **_RESNEXT_32x4d),
        ModelConfig("seresnext101", depths=(3, 4, 23, 3), attention="se",
                    paper_top1_error=20.58,
                    description="SE-ResNeXt-101 32x4d (the SKNet paper's SENet-101)",
                    **_RESNEXT_32x4d),
        ModelConfig("seresnet50", depths=(3, 4, 6, 3),
                    description="SE-ResNet-50, official SENet release (stride on the 1x1 reduce)",
                    pretrained=_senet_release("SE-ResNet-50.caffemodel", 77.63, "se-resnet-50"),
                    **_SE_RESNET),
        ModelConfig("seresnet101", depths=(3, 4, 23, 3),
                    description="SE-ResNet-101, official SENet release",
                    pretrained=_senet_release(
                        "SE-ResNet-101.caffemodel", 78.25, "se-resnet-101",
                        "09777ce1202087954ee34ae2566cf611d03d2d8195ced0fe51b612ebf951d729"),
                    **_SE_RESNET),
        ModelConfig("seresnet152", depths=(3, 8, 36, 3),
                    description="SE-ResNet-152, official SENet release",
                    # The release's caffemodel is on Google Drive only; timm's port downloads.
                    pretrained=_hf_timm("legacy_seresnet152.in1k"),
                    **_SE_RESNET),
        ModelConfig("seresnext50_caffe", depths=(3, 4, 6, 3), attention="se", stem_pool="caffe",
                    description="SE-ResNeXt-50 32x4d, official SENet release layout",
                    pretrained=_hf_timm("legacy_seresnext50_32x4d.in1k"),
                    **_RESNEXT_32x4d),
        ModelConfig("seresnext101_caffe", depths=(3, 4, 23, 3), attention="se",
                    stem_pool="caffe",
                    description="SE-ResNeXt-101 32x4d, official SENet release layout",
                    pretrained=_senet_release(
                        "SE-ResNeXt-101.caffemodel", 80.19, "se-resnext-101",
                        "78dc95c9b768fdb32a0a3981a686edaf655df82973b051d818bae523c9a93c90"),
                    **_RESNEXT_32x4d),
        ModelConfig("senet154", block="bottleneck", depths=(3, 8, 36, 3),
                    reduce_widths=(128, 256, 512, 1024), widths=(256, 512, 1024, 2048),
                    out_channels=(256, 512, 1024, 2048), groups=64, attention="se",
                    stem="deep", stem_pool="caffe", shortcut_kernel=3, dropout=0.2,
                    description="SENet-154 (ILSVRC 2017 winner), official SENet release",
                    pretrained=_hf_timm("legacy_senet154.in1k")),
        ModelConfig("mini_sknet", block="bottleneck", depths=(2, 2, 1, 1),
                    widths=(8, 16, 32, 64), out_channels=(64, 128, 256, 512), groups=8,
                    attention="sk",
                    description="tiny SK-ResNeXt (SPEC §5 mini network): tests, smoke runs"),
        ModelConfig("skresnet18", depths=(2, 2, 2, 2),
                    description="SK-ResNet-18 (timm skresnet18: basic blocks, split input)",
                    pretrained=_hf_timm("skresnet18.ra_in1k"), **_SK_RESNET),
        ModelConfig("skresnet34", depths=(3, 4, 6, 3),
                    description="SK-ResNet-34 (timm skresnet34: basic blocks, split input)",
                    pretrained=_hf_timm("skresnet34.ra_in1k"), **_SK_RESNET),
    )
}


def get_model_config(name) -> ModelConfig:
    """Registry lookup by name (case-insensitive, '-'/'_' ignored); configs pass through."""
    if isinstance(name, ModelConfig):
        return name
    def norm(n):
        return str(n).lower().replace("-", "").replace("_", "")

    matches = [c for n, c in MODELS.items() if norm(n) == norm(name)]
    if not matches:
        raise ValueError(f"Unknown model {name!r}. Known models: {', '.join(sorted(MODELS))}")
    return matches[0]


def list_models():
    return sorted(MODELS)
