"""Name and layout mapping between timm's ResNeSt state_dicts (`timm/models/resnest.py`) and
the ResNeSt family (docs/models/resnest.md).

timm: the deep stem `conv1.{0,3,6}` with BNs `conv1.1`, `conv1.4`, `bn1`; per unit `conv1` /
`bn1`, the split attention `conv2.{conv,bn0,fc1,bn1,fc2}`, `conv3` / `bn3`, and the
shortcut `downsample.{1,2}` (index 0 is its average pool, which has no weights).
"""

from sknet_keras.convert.common import conv_kernel
from sknet_keras.convert.timm import _bn, _classifier, _conv_bn
from sknet_keras.models.resnet import units

_STEM = (("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"), ("conv1.6", "bn1"))


def resnest_timm_mapping(config, include_top=True):
    """{Keras weight path: (timm key, transform or None)} of a ResNeSt."""
    out = {}
    for i, (conv, bn) in enumerate(_STEM, start=1):
        out.update(_conv_bn(f"conv1_{i}", f"{conv}.weight", bn))
    for unit in units(config):
        p, t = unit.keras_prefix, f"layer{unit.stage + 1}.{unit.index}"
        out.update(_conv_bn(f"{p}_1", f"{t}.conv1.weight", f"{t}.bn1"))
        splat = f"{p}_2_splat"
        out[f"{splat}/conv/kernel"] = (f"{t}.conv2.conv.weight", conv_kernel)
        out.update(_bn(f"{splat}/bn0", f"{t}.conv2.bn0"))
        out.update(_bn(f"{splat}/bn1", f"{t}.conv2.bn1"))
        for fc in ("fc1", "fc2"):
            out[f"{splat}/{fc}/kernel"] = (f"{t}.conv2.{fc}.weight", conv_kernel)
            out[f"{splat}/{fc}/bias"] = (f"{t}.conv2.{fc}.bias", None)
        out.update(_conv_bn(f"{p}_3", f"{t}.conv3.weight", f"{t}.bn3"))
        if unit.has_shortcut_conv:
            out.update(_conv_bn(f"{p}_0", f"{t}.downsample.1.weight", f"{t}.downsample.2"))
    if include_top:
        out.update(_classifier("fc"))
    return out
