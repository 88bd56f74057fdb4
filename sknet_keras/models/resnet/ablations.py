"""The SKNet paper's ablation networks (Tables 3, 6, 7) and its CIFAR networks (Table 5).

Each is SKNet-50 / ResNeXt-50 / ResNeXt-29 with one thing changed. Paper figures (params M,
GFLOPs) document; docs/models/ablations.md lists ours beside them, with the readings chosen
where the paper leaves the construction open.
"""

from sknet_keras.models.entry import Entry, Paper
from sknet_keras.models.resnet.config import ResNetConfig, SKConfig
from sknet_keras.models.resnet.entries import D50, RESNEXT_32x4d

K3, K5, K7 = (3, 1, None), (3, 2, None), (3, 3, None)  # the paper's 3×3, "5×5", "7×7"


def _sknet50(name, branches, attention=True, description="", paper=None):
    config = ResNetConfig(name, depths=D50, attention="sk",
                          sk=SKConfig(branches=branches, attention=attention), **RESNEXT_32x4d)
    return Entry(config, description, paper)


def _table(table, params, gflops):
    return Paper(params_m=params, gflops=gflops, source=f"SKNet paper Table {table}")


TABLE3 = (
    # ResNeXt-50 made as costly as SKNet-50 three ways. "Wider": every unit's output 1/8
    # wider (32x4d bottlenecks, outputs 288 ... 2304), the plain reading closest to
    # 28.1 M / 4.74 G (docs/models/ablations.md lists the others tried).
    Entry(ResNetConfig("resnext50_wider", depths=D50, block="bottleneck",
                       widths=(128, 256, 512, 1024), out_channels=(288, 576, 1152, 2304),
                       groups=32),
          "ResNeXt-50 wider (32x4.5d), SKNet paper Table 3", _table(3, 28.1, 4.74)),
    Entry(ResNetConfig("resnext56", depths=(3, 4, 8, 3), **RESNEXT_32x4d),
          "ResNeXt-56 32x4d (two more conv4 units), SKNet paper Table 3",
          _table(3, 27.3, 4.67)),
    Entry(ResNetConfig("resnext50_36x4d", depths=D50, block="bottleneck",
                       widths=(144, 288, 576, 1152), out_channels=(256, 512, 1024, 2048),
                       groups=36),
          "ResNeXt-50 36x4d (more groups), SKNet paper Table 3", _table(3, 27.6, 4.70)),
)

TABLE6 = (  # SKNet-50's second branch; the first stays 3×3, dilation 1, 32 groups
    _sknet50("sknet50_k3d3", (K3, (3, 3, None)), description="SKNet-50, branch 2: 3x3 d3 G32",
             paper=_table(6, 27.5, 4.47)),
    _sknet50("sknet50_k3d1", (K3, (3, 1, None)), description="SKNet-50, branch 2: 3x3 d1 G32",
             paper=_table(6, 27.5, 4.47)),
    _sknet50("sknet50_k5g64", (K3, (5, 1, 64)), description="SKNet-50, branch 2: 5x5 d1 G64",
             paper=_table(6, 28.1, 4.56)),
    _sknet50("sknet50_k7g128", (K3, (7, 1, 128)),
             description="SKNet-50, branch 2: 7x7 d1 G128", paper=_table(6, 28.1, 4.55)),
)

TABLE7 = (  # kernel sets; `_sum`: the branches added, no attention; K3 alone is resnext50
    _sknet50("sknet50_k5", (K5,), attention=False, description="ResNeXt-50 with K5 only",
             paper=_table(7, 25.0, 4.24)),
    _sknet50("sknet50_k7", (K7,), attention=False, description="ResNeXt-50 with K7 only",
             paper=_table(7, 25.0, 4.24)),
    _sknet50("sknet50_k3k5_sum", (K3, K5), attention=False,
             description="K3 + K5, summed (no attention)", paper=_table(7, 26.5, 4.46)),
    _sknet50("sknet50_k3k7", (K3, K7), description="K3 + K7, SK attention",
             paper=_table(7, 27.5, 4.47)),
    _sknet50("sknet50_k3k7_sum", (K3, K7), attention=False,
             description="K3 + K7, summed (no attention)", paper=_table(7, 26.5, 4.46)),
    _sknet50("sknet50_k5k7", (K5, K7), description="K5 + K7, SK attention",
             paper=_table(7, 27.5, 4.47)),
    _sknet50("sknet50_k5k7_sum", (K5, K7), attention=False,
             description="K5 + K7, summed (no attention)", paper=_table(7, 26.5, 4.46)),
    _sknet50("sknet50_k3k5k7", (K3, K5, K7), description="K3 + K5 + K7, SK attention",
             paper=_table(7, 29.3, 4.70)),
    _sknet50("sknet50_k3k5k7_sum", (K3, K5, K7), attention=False,
             description="K3 + K5 + K7, summed (no attention)", paper=_table(7, 28.0, 4.69)),
)


def _cifar(name, cardinality, width, description, paper=None, **changes):
    """ResNeXt-29 C×wd on CIFAR: 3×3 stem (64), 3 stages × 3 bottleneck units, outputs
    256/512/1024; the 3×3s are C groups × w channels wide in the first stage, doubling."""
    settings = {"groups": cardinality, **changes}
    config = ResNetConfig(name, block="bottleneck", depths=(3, 3, 3),
                          widths=tuple(cardinality * width * 2 ** s for s in range(3)),
                          out_channels=(256, 512, 1024), stem="cifar", default_size=32,
                          min_size=16, **settings)
    return Entry(config, description, paper, classes=10)


def _cifar_paper(params, source, error=None):
    return Paper(top1_error=error, params_m=params, source=source)


CIFAR = (
    _cifar("resnext29_8x64d", 8, 64, "ResNeXt-29 8x64d (CIFAR)",
           _cifar_paper(34.4, "ResNeXt paper Table 7")),
    _cifar("resnext29_16x32d", 16, 32, "ResNeXt-29 16x32d (CIFAR)"),
    _cifar("resnext29_16x64d", 16, 64, "ResNeXt-29 16x64d (CIFAR)",
           _cifar_paper(68.1, "ResNeXt paper Table 7")),
    # SE on the 8×64d trunk: the reading that gives the paper's 35.0 M (its text says 16×32d,
    # which would give 25.8 M; docs/models/ablations.md).
    _cifar("senet29", 8, 64, "SENet-29: SE-ResNeXt-29 8x64d (CIFAR)",
           _cifar_paper(35.0, "SKNet paper Table 5"), attention="se"),
    # SK[2,32,16] on the 16×32d trunk: 32 groups in both branches (the paper's SK[2,32,16];
    # 16 groups per branch would give 37.5 M, the paper says 27.7 M).
    _cifar("sknet29", 16, 32, "SKNet-29: SK[2,32,16] on ResNeXt-29 16x32d (CIFAR)",
           _cifar_paper(27.7, "SKNet paper Table 5 (CIFAR-10 error; CIFAR-100 17.33)", 3.47),
           attention="sk", groups=32),
)

MINI_CIFAR = Entry(
    ResNetConfig("mini_sknet29", block="bottleneck", depths=(1, 1, 1), widths=(16, 32, 64),
                 out_channels=(32, 64, 128), groups=4, attention="sk", stem="cifar",
                 stem_width=16, default_size=32, min_size=16, sk=SKConfig(min_attn_channels=8)),
    "tiny SKNet-29-shaped CIFAR network: tests, smoke runs", classes=10)

ENTRIES = TABLE3 + TABLE6 + TABLE7 + CIFAR + (MINI_CIFAR,)
