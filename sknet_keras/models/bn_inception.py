"""The BN-Inception family: SE-BN-Inception of the official SENet release (hujie-frank/SENet).

Laid out as the release's `SE-BN-Inception.prototxt`: a stem (7×7/2 conv, ceil-mode 3×3/2 max
pool, 1×1 and 3×3 convs, max pool), then ten Inception modules 3a..5b whose branches
(1×1; 1×1 → 3×3; 1×1 → 3×3 → 3×3; pool [→ 1×1]) are concatenated in that order and
recalibrated by an SE block. Every convolution is conv (no bias) → BN → ReLU. Layer names are
the release's with '/' → '_' (docs/models/se_bn_inception.md); `conv_units` lists them and the
Caffe converter maps by it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from keras import layers

from sknet_keras.layers import BatchNorm, GroupConv2D, SqueezeExcite
from sknet_keras.layers.caffe_pooling import CaffePooling2D
from sknet_keras.layers.initializers import BN_EPSILON, BN_MOMENTUM
from sknet_keras.models.entry import Entry, Family, Paper

POOL_TYPES = ("avg", "max")


@dataclasses.dataclass(frozen=True)
class InceptionModule:
    """One Inception module (the release's `inception_<name>`), by branch widths.

    `conv1x1` 0: no 1×1 branch; `pool_proj` 0: the pooled input is concatenated as is. At
    `strides` 2 (3c, 4e: the reduction modules) both 3×3 branches end with a stride-2 3×3
    and the pool is a 3×3/2 max pool in ceil mode; otherwise the pool is 3×3/1, padding 1.
    """

    name: str
    conv1x1: int
    reduce3x3: int
    conv3x3: int
    reduce_double: int
    conv_double: int
    pool: str
    pool_proj: int
    strides: int = 1

    def __post_init__(self):
        if self.pool not in POOL_TYPES or self.strides not in (1, 2):
            raise ValueError(f"module {self.name}: pool must be one of {POOL_TYPES} and strides "
                             f"1 or 2; got {self.pool!r}, {self.strides!r}")
        widths = (self.reduce3x3, self.conv3x3, self.reduce_double, self.conv_double)
        if min(widths) < 1 or min(self.conv1x1, self.pool_proj) < 0:
            raise ValueError(f"module {self.name}: 3×3 branch widths must be positive and "
                             f"conv1x1, pool_proj >= 0; got {widths}, {self.conv1x1}, "
                             f"{self.pool_proj}")
        if self.strides == 2 and (self.conv1x1 or self.pool != "max"):
            raise ValueError(f"module {self.name}: a stride-2 module has no 1×1 branch "
                             f"(conv1x1=0) and a max pool; got {self.conv1x1}, {self.pool!r}")


# Widths of SE-BN-Inception.prototxt: 1×1, 3×3 reduce, 3×3, double reduce, double 3×3,
# pool, pool projection.
SE_BN_INCEPTION_MODULES = (
    InceptionModule("3a", 64, 64, 64, 64, 96, "avg", 32),
    InceptionModule("3b", 64, 64, 96, 64, 96, "avg", 64),
    InceptionModule("3c", 0, 128, 160, 64, 96, "max", 0, strides=2),
    InceptionModule("4a", 224, 64, 96, 96, 128, "avg", 128),
    InceptionModule("4b", 192, 96, 128, 96, 128, "avg", 128),
    InceptionModule("4c", 160, 128, 160, 128, 160, "avg", 128),
    InceptionModule("4d", 96, 128, 192, 160, 192, "avg", 128),
    InceptionModule("4e", 0, 128, 192, 192, 256, "max", 0, strides=2),
    InceptionModule("5a", 352, 192, 320, 160, 224, "avg", 128),
    InceptionModule("5b", 352, 192, 320, 192, 224, "max", 128),
)


@dataclasses.dataclass(frozen=True)
class BNInceptionConfig:
    """A BN-Inception network: stem widths (7×7/2 conv, 1×1 reduce, 3×3), Inception modules,
    SE reduction r (None: no SE blocks), dropout before the classifier.

    min_size 32: the smallest even input at which every layer of the release runs with
    Caffe's own pooling (the last map is 1×1).
    """

    family = "bn_inception"

    name: str
    modules: Tuple[InceptionModule, ...] = SE_BN_INCEPTION_MODULES
    stem_widths: Tuple[int, int, int] = (64, 64, 192)
    se_reduction: Optional[int] = 16
    dropout: float = 0.0
    default_size: int = 224
    min_size: int = 32

    def __post_init__(self):
        if not self.modules or not all(isinstance(m, InceptionModule) for m in self.modules):
            raise ValueError(f"modules must be a non-empty tuple of InceptionModule; "
                             f"got {self.modules!r}")
        if len(self.stem_widths) != 3 or min(self.stem_widths) < 1:
            raise ValueError(f"stem_widths must be three positive ints; got {self.stem_widths}")
        if self.se_reduction is not None and self.se_reduction < 1:
            raise ValueError(f"se_reduction must be None or >= 1; got {self.se_reduction!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")

    def replace(self, **changes) -> "BNInceptionConfig":
        return dataclasses.replace(self, **changes)


def keras_name(release_name):
    """The Keras layer name of a release layer: '/' → '_' (`inception_3c/pool/3x3_s2` →
    `inception_3c_pool_3x3_s2`)."""
    return release_name.replace("/", "_")


def module_branches(module):
    """The module's conv branches in Concat order: [(release suffix, filters, kernel,
    strides)], then the pool branch's projection if any."""
    m, s = module, module.strides
    branches = [[("1x1", m.conv1x1, 1, 1)]] if m.conv1x1 else []
    branches.append([("3x3_reduce", m.reduce3x3, 1, 1), ("3x3", m.conv3x3, 3, s)])
    branches.append([("double3x3_reduce", m.reduce_double, 1, 1),
                     ("double3x3a", m.conv_double, 3, 1), ("double3x3b", m.conv_double, 3, s)])
    return branches, ([("pool_proj", m.pool_proj, 1, 1)] if m.pool_proj else [])


def _stem_units(config):
    w1, w2, w3 = config.stem_widths
    return [("conv1/7x7_s2", w1, 7, 2), ("conv2/3x3_reduce", w2, 1, 1), ("conv2/3x3", w3, 3, 1)]


def conv_units(config):
    """Release names of every conv → BN → ReLU unit, in the prototxt's order."""
    names = [unit[0] for unit in _stem_units(config)]
    for module in config.modules:
        branches, proj = module_branches(module)
        names += [f"inception_{module.name}/{unit[0]}" for b in branches + [proj] for unit in b]
    return names


def _conv_bn(x, release_name, filters, kernel, strides):
    name = keras_name(release_name)
    x = GroupConv2D(filters, kernel, strides=strides, name=name + "_conv")(x)
    x = BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name + "_bn")(x)
    return layers.ReLU(name=name + "_relu")(x)


def _pool_branch(x, module, prefix):
    if module.strides == 2:  # inception_3c/pool/3x3_s2: ceil mode, grown to the convs' size
        return CaffePooling2D("max", 3, 2, match_conv=True,
                              name=keras_name(f"{prefix}/pool/3x3_s2"))(x)
    return CaffePooling2D(module.pool, 3, 1, padding=1, name=keras_name(f"{prefix}/pool"))(x)


def inception_module(x, module, config):
    """Branches → Concat (the release's order) → SE (`inception_<name>_se`)."""
    prefix = f"inception_{module.name}"
    branches, proj = module_branches(module)
    outputs = []
    for branch in branches:
        y = x
        for suffix, filters, kernel, strides in branch:
            y = _conv_bn(y, f"{prefix}/{suffix}", filters, kernel, strides)
        outputs.append(y)
    y = _pool_branch(x, module, prefix)
    for suffix, filters, kernel, strides in proj:
        y = _conv_bn(y, f"{prefix}/{suffix}", filters, kernel, strides)
    x = layers.Concatenate(name=f"{prefix}_concat")(outputs + [y])
    if config.se_reduction is not None:
        x = SqueezeExcite(config.se_reduction, name=f"{prefix}_se")(x)
    return x


def _module_output(module, config):
    suffix = "concat" if config.se_reduction is None else "se"
    return f"inception_{module.name}_{suffix}"


def pyramid_taps(config: BNInceptionConfig):
    """{level: layer name} at stride 2**level: conv1 (2), conv2's 3×3 (4), then the last
    module before each stride-2 module (3b at 8, 4d at 16) and the last module (5b at 32)."""
    taps, level = {1: keras_name("conv1/7x7_s2") + "_relu",
                   2: keras_name("conv2/3x3") + "_relu"}, 3
    for module in config.modules:
        level += module.strides == 2
        taps[level] = _module_output(module, config)
    return taps


def backbone(x, config: BNInceptionConfig):
    """Stem and Inception modules; returns the last module's feature map (7×7 at 224).

    The release's head, pool5/7x7_s1 (AVE 7×7, stride 1) → classifier, sees a 7×7 map at 224
    (and 227): one window, the global average, so `build_network`'s head is the same.
    """
    (c1, w1, k1, s1), reduce_unit, conv_unit = _stem_units(config)
    x = _conv_bn(x, c1, w1, k1, s1)
    x = CaffePooling2D("max", 3, 2, name="pool1_3x3_s2")(x)
    x = _conv_bn(x, *reduce_unit)
    x = _conv_bn(x, *conv_unit)
    x = CaffePooling2D("max", 3, 2, name="pool2_3x3_s2")(x)
    for module in config.modules:
        x = inception_module(x, module, config)
    return x


SENET_PAPER = "Hu et al., Squeeze-and-Excitation Networks (CVPR 2018); release README"

ENTRIES = (
    Entry(BNInceptionConfig("se_bn_inception"),
          "SE-BN-Inception of the official SENet release (Caffe layout and pooling).",
          Paper(top1_error=23.62, source=SENET_PAPER)),
)

FAMILY = Family("bn_inception", BNInceptionConfig, backbone, pyramid_taps, ENTRIES, converters={
    "caffe": "sknet_keras.convert.caffe_bn_inception:bn_inception_mapping"},
    hub_name="SEBNInception")
