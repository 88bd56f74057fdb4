"""The named networks of the ResNet family: each a few lines of configuration.

Paper figures are the SKNet paper's (Li et al. 2019, Table 2) unless noted; they document,
they are not what the tests check against.
"""

from sknet_keras.models.entry import Entry, Paper
from sknet_keras.models.resnet.config import ResNetConfig, SKConfig

RESNEXT_32x4d = dict(
    block="bottleneck",
    widths=(128, 256, 512, 1024),
    out_channels=(256, 512, 1024, 2048),
    groups=32,
)
SK_RESNET = dict(  # timm's skresnet18/34: basic blocks, split input, r=8, L=16, divisor 16
    block="basic",
    widths=(64, 128, 256, 512),
    out_channels=(64, 128, 256, 512),
    attention="sk",
    sk=SKConfig(reduction=8, min_attn_channels=16, attn_divisor=16, split_input=True),
)
# The official SENet release (hujie-frank/SENet): Caffe layout, ceil-mode stem pool, the
# stride on the 1×1 reduce.
SE_RESNET = dict(
    block="bottleneck",
    widths=(64, 128, 256, 512),
    out_channels=(256, 512, 1024, 2048),
    attention="se",
    stem_pool="caffe",
    stride_in_reduce=True,
)
D50, D101, D152 = (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)
SKNET_PAPER = "SKNet paper Table 2"


def _paper(err, params=None, gflops=None, source=SKNET_PAPER):
    return Paper(top1_error=err, params_m=params, gflops=gflops, source=source)


ENTRIES = (
    Entry(ResNetConfig("sknet26", depths=(2, 2, 2, 2), attention="sk", **RESNEXT_32x4d),
          "SKNet-26: SK[2,32,16] ResNeXt-26 32x4d", _paper(22.74, 16.8)),
    Entry(ResNetConfig("sknet50", depths=D50, attention="sk", **RESNEXT_32x4d),
          "SKNet-50: SK[2,32,16] ResNeXt-50 32x4d", _paper(20.79, 27.5, 4.47)),
    Entry(ResNetConfig("sknet50_caffe", depths=D50, attention="sk", stem_pool="caffe",
                       **RESNEXT_32x4d),
          "SKNet-50, official Caffe release layout (ceil-mode max pool)", _paper(20.79)),
    Entry(ResNetConfig("sknet101_caffe", depths=D101, attention="sk", stem_pool="caffe",
                       sk=SKConfig(stage_attn_channels=(None, 16, None, None)),
                       **RESNEXT_32x4d),
          "SKNet-101, official Caffe release layout (d=16 in conv3)", _paper(20.19)),
    Entry(ResNetConfig("sknet101", depths=D101, attention="sk", **RESNEXT_32x4d),
          "SKNet-101: SK[2,32,16] ResNeXt-101 32x4d", _paper(20.19, 48.9)),
    Entry(ResNetConfig("resnext50", depths=D50, **RESNEXT_32x4d),
          "ResNeXt-50 32x4d", _paper(22.23, 25.0)),
    Entry(ResNetConfig("resnext101", depths=D101, **RESNEXT_32x4d),
          "ResNeXt-101 32x4d", _paper(21.11, 44.3)),
    Entry(ResNetConfig("seresnext50", depths=D50, attention="se", **RESNEXT_32x4d),
          "SE-ResNeXt-50 32x4d (the SKNet paper's SENet-50)", _paper(21.12, 27.7)),
    Entry(ResNetConfig("seresnext101", depths=D101, attention="se", **RESNEXT_32x4d),
          "SE-ResNeXt-101 32x4d (the SKNet paper's SENet-101)", _paper(20.58)),
    Entry(ResNetConfig("seresnet50", depths=D50, **SE_RESNET),
          "SE-ResNet-50, official SENet release (stride on the 1x1 reduce)"),
    Entry(ResNetConfig("seresnet101", depths=D101, **SE_RESNET),
          "SE-ResNet-101, official SENet release"),
    Entry(ResNetConfig("seresnet152", depths=D152, **SE_RESNET),
          "SE-ResNet-152, official SENet release"),
    Entry(ResNetConfig("seresnext50_caffe", depths=D50, attention="se", stem_pool="caffe",
                       **RESNEXT_32x4d),
          "SE-ResNeXt-50 32x4d, official SENet release layout"),
    Entry(ResNetConfig("seresnext101_caffe", depths=D101, attention="se", stem_pool="caffe",
                       **RESNEXT_32x4d),
          "SE-ResNeXt-101 32x4d, official SENet release layout"),
    Entry(ResNetConfig("senet154", block="bottleneck", depths=D152,
                       reduce_widths=(128, 256, 512, 1024), widths=(256, 512, 1024, 2048),
                       out_channels=(256, 512, 1024, 2048), groups=64, attention="se",
                       stem="deep", stem_pool="caffe", shortcut_kernel=3, dropout=0.2),
          "SENet-154 (ILSVRC 2017 winner), official SENet release"),
    Entry(ResNetConfig("mini_sknet", block="bottleneck", depths=(2, 2, 1, 1),
                       widths=(8, 16, 32, 64), out_channels=(64, 128, 256, 512), groups=8,
                       attention="sk"),
          "tiny SK-ResNeXt (the timm reference mini network): tests, smoke runs"),
    Entry(ResNetConfig("skresnet18", depths=(2, 2, 2, 2), **SK_RESNET),
          "SK-ResNet-18 (timm skresnet18: basic blocks, split input)"),
    Entry(ResNetConfig("skresnet34", depths=D50, **SK_RESNET),
          "SK-ResNet-34 (timm skresnet34: basic blocks, split input)"),
)

# timm's architecture names of these networks: a registry name, or one with other widths or
# cardinality (timm's wider ResNeXt-101s, built from the registry's by these changes).
_WIDE = {"32x8d": dict(widths=(256, 512, 1024, 2048)),
         "32x16d": dict(widths=(512, 1024, 2048, 4096)),
         "32x32d": dict(widths=(1024, 2048, 4096, 8192)),
         "64x4d": dict(widths=(256, 512, 1024, 2048), groups=64)}
TIMM_ARCHITECTURES = {
    "skresnet18": "skresnet18", "skresnet34": "skresnet34", "skresnext50_32x4d": "sknet50",
    "resnext50_32x4d": "resnext50", "resnext101_32x4d": "resnext101",
    "seresnext50_32x4d": "seresnext50", "seresnext101_32x4d": "seresnext101",
    "legacy_seresnet50": "seresnet50", "legacy_seresnet101": "seresnet101",
    "legacy_seresnet152": "seresnet152", "legacy_seresnext50_32x4d": "seresnext50_caffe",
    "legacy_seresnext101_32x4d": "seresnext101_caffe", "legacy_senet154": "senet154",
    **{f"resnext101_{w}": ("resnext101", _WIDE[w]) for w in ("32x8d", "32x16d", "32x32d", "64x4d")},
    **{f"seresnext101_{w}": ("seresnext101", _WIDE[w]) for w in ("32x8d", "64x4d")},
}
