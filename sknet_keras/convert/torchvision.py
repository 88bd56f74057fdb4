"""Name and layout mapping between torchvision's ShuffleNetV2 state_dicts and our models.

torchvision keys: `conv1.{0,1}` (stem conv, BN), `stage{2,3,4}.{unit}.branch1.{0..3}`
(downsampling units: depthwise 3×3/2, BN, 1×1, BN), `.branch2.{0,1,3,4,5,6}` (1×1, BN,
depthwise 3×3, BN, 1×1, BN), `conv5.{0,1}`, `fc`. Only the baselines exist in torchvision;
the SE / SK variants have no torchvision counterpart and are refused.
"""

import os

import numpy as np

from sknet_keras.convert.common import dense_kernel, family_mapping
from sknet_keras.convert.pth import read_pth
from sknet_keras.convert.timm import _conv_bn
from sknet_keras.models.shufflenet import units

# torchvision's branch2 Sequential: (conv index, BN index) of our `_1`, `_2`, `_3` layers.
_MAIN_BRANCH = ((1, 0, 1), (2, 3, 4), (3, 5, 6))


def _check(config):
    if config.attention is not None:
        raise ValueError(f"{config.name!r} adds {config.attention.upper()} to ShuffleNetV2: "
                         "torchvision publishes only the baselines (shufflenet_v2_x0_5, "
                         "shufflenet_v2_x1_0), so there are no torchvision weights to convert")


def torchvision_mapping(model_config, include_top=True):
    """{Keras weight path: (torchvision key, transform or None)} for a registry model."""
    return family_mapping("torchvision", model_config, include_top)


def shufflenet_torchvision_mapping(config, include_top=True):
    """`torchvision_mapping` of ShuffleNetV2: torchvision's baselines."""
    _check(config)
    out = _conv_bn("conv1", "conv1.0.weight", "conv1.1")
    for unit in units(config):
        p, t = unit.prefix, f"stage{unit.stage + 2}.{unit.index}"
        if unit.strides > 1:
            out.update(_conv_bn(f"{p}_0_dw", f"{t}.branch1.0.weight", f"{t}.branch1.1"))
            out.update(_conv_bn(f"{p}_0", f"{t}.branch1.2.weight", f"{t}.branch1.3"))
        for i, conv, bn in _MAIN_BRANCH:
            out.update(_conv_bn(f"{p}_{i}", f"{t}.branch2.{conv}.weight", f"{t}.branch2.{bn}"))
    out.update(_conv_bn("conv5", "conv5.0.weight", "conv5.1"))
    if include_top:
        out["predictions/kernel"] = ("fc.weight", dense_kernel)
        out["predictions/bias"] = ("fc.bias", None)
    return out


def read_torchvision_checkpoint(path):
    """{key: float32 array} of a torchvision `.pth` (a PyTorch pickle, read without PyTorch
    and without running code); BN's `num_batches_tracked` counters are dropped."""
    path = os.fspath(path)
    if not path.endswith((".pth", ".pt")):
        raise ValueError(f"unknown torchvision checkpoint type {path!r}: expected a .pth file")
    return {k: np.asarray(v, np.float32) for k, v in read_pth(path).items()
            if not k.endswith("num_batches_tracked")}
