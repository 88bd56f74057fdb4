"""SE-BN-Inception of the SENet release (hujie-frank/SENet): caffemodel blobs → Keras paths.

The release names each conv → BatchNorm → Scale unit `<conv>`, `<conv>/bn`, `<conv>/bn/scale`
(as its SE-ResNets do) and each SE block `inception_<m>_1x1_down` / `_1x1_up` (1×1 convs with
bias on the pooled vector). Our layers carry the release's names with '/' → '_'
(`sknet_keras.models.bn_inception.conv_units`), so the mapping is by name, unit by unit.
"""

from sknet_keras.convert.common import conv_kernel, dense_kernel, flat, pointwise_kernel
from sknet_keras.models.bn_inception import conv_units, keras_name


def bn_inception_mapping(config, include_top=True):
    """{Keras weight path: ("layer#blob", transform)} for a BN-Inception config."""
    out = {}
    for layer in conv_units(config):
        prefix = keras_name(layer)
        out[f"{prefix}_conv/kernel"] = (f"{layer}#0", conv_kernel)
        out[f"{prefix}_bn/gamma"] = (f"{layer}/bn/scale#0", flat)
        out[f"{prefix}_bn/beta"] = (f"{layer}/bn/scale#1", flat)
        out[f"{prefix}_bn/moving_mean"] = (f"{layer}/bn#mean", None)
        out[f"{prefix}_bn/moving_variance"] = (f"{layer}/bn#var", None)
    if config.se_reduction is not None:
        for module in config.modules:
            m = f"inception_{module.name}"
            for ours, theirs in (("reduce", "down"), ("expand", "up")):
                out[f"{m}_se/{ours}/kernel"] = (f"{m}_1x1_{theirs}#0", pointwise_kernel)
                out[f"{m}_se/{ours}/bias"] = (f"{m}_1x1_{theirs}#1", flat)
    if include_top:
        out["predictions/kernel"] = ("classifier#0", dense_kernel)
        out["predictions/bias"] = ("classifier#1", flat)
    return out
