"""Name and layout mapping between timm ResNet-family state_dicts and our models (docs/architecture.md).

timm names the SK and plain ResNeXt units differently (`conv1.conv`/`conv1.bn` in SK units,
`conv1`/`bn1` in its plain `Bottleneck`); the mapping follows the model's structure, so one
function covers SKNet, SK-ResNet, ResNeXt and SE-ResNeXt. Models with the SENet Caffe
release's layout map onto timm's `legacy_*` SENets, which port that release.
"""

import os

import numpy as np

from sknet_keras.convert.common import (INVERSE, conv_kernel, dense_kernel, family_mapping,
                                        pointwise_kernel)
from sknet_keras.convert.pth import read_pth
from sknet_keras.models import FAMILIES
from sknet_keras.models.resnet import units
from sknet_keras.registry import get_model_config

_BN = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
       ("moving_variance", "running_var"))


def _bn(keras_prefix, timm_prefix):
    return {f"{keras_prefix}/{k}": (f"{timm_prefix}.{t}", None) for k, t in _BN}


def _conv(keras_name, timm_key):
    return {f"{keras_name}/kernel": (timm_key, conv_kernel)}


def _classifier(timm_prefix):
    return {"predictions/kernel": (f"{timm_prefix}.weight", dense_kernel),
            "predictions/bias": (f"{timm_prefix}.bias", None)}


def _conv_bn(keras_prefix, timm_conv, timm_bn):
    return {**_conv(f"{keras_prefix}_conv", timm_conv), **_bn(f"{keras_prefix}_bn", timm_bn)}


def _sk(keras_name, timm_prefix, config):
    out = {}
    for m in range(len(config.sk.branches)):
        out.update(_conv(f"{keras_name}/branch{m}_conv", f"{timm_prefix}.paths.{m}.conv.weight"))
        out.update(_bn(f"{keras_name}/branch{m}_bn", f"{timm_prefix}.paths.{m}.bn"))
    if config.sk.attention:
        out[f"{keras_name}/attn/fuse_conv/kernel"] = (f"{timm_prefix}.attn.fc_reduce.weight",
                                                  pointwise_kernel)
        out.update(_bn(f"{keras_name}/attn/fuse_bn", f"{timm_prefix}.attn.bn"))
        out[f"{keras_name}/attn/select_conv/kernel"] = (f"{timm_prefix}.attn.fc_select.weight",
                                                    pointwise_kernel)
    return out


def _unit(config, prefix, t, has_shortcut):
    """Mapping of one unit: Keras layer prefix `prefix`, timm module prefix `t`."""
    out = {}
    sk = config.attention == "sk"
    if config.block == "bottleneck":
        if sk:
            out.update(_conv_bn(f"{prefix}_1", f"{t}.conv1.conv.weight", f"{t}.conv1.bn"))
            out.update(_sk(f"{prefix}_2_sk", f"{t}.conv2", config))
            out.update(_conv_bn(f"{prefix}_3", f"{t}.conv3.conv.weight", f"{t}.conv3.bn"))
        else:
            for i in (1, 2, 3):
                out.update(_conv_bn(f"{prefix}_{i}", f"{t}.conv{i}.weight", f"{t}.bn{i}"))
    else:
        if sk:
            out.update(_sk(f"{prefix}_1_sk", f"{t}.conv1", config))
            out.update(_conv_bn(f"{prefix}_2", f"{t}.conv2.conv.weight", f"{t}.conv2.bn"))
        else:
            for i in (1, 2):
                out.update(_conv_bn(f"{prefix}_{i}", f"{t}.conv{i}.weight", f"{t}.bn{i}"))
    if config.attention == "se":
        for ours, theirs in (("reduce", "fc1"), ("expand", "fc2")):
            out[f"{prefix}_se/{ours}/kernel"] = (f"{t}.se.{theirs}.weight", pointwise_kernel)
            out[f"{prefix}_se/{ours}/bias"] = (f"{t}.se.{theirs}.bias", None)
    if has_shortcut:
        out.update(_conv_bn(f"{prefix}_0", f"{t}.downsample.0.weight", f"{t}.downsample.1"))
    return out


def _legacy_senet_mapping(config, include_top):
    """timm's `legacy_*` SENets (Cadene's port of the SENet Caffe release, same layout):
    `layer0.conv1`/`bn1` (three of each for SENet-154's deep stem), `layer{s}.{b}.conv{i}` /
    `bn{i}`, `se_module.fc1`/`fc2` (biased 1×1 convs), `downsample.{0,1}`, `last_linear`."""
    out = {}
    if config.stem == "deep":
        for i in (1, 2, 3):
            out.update(_conv_bn(f"conv1_{i}", f"layer0.conv{i}.weight", f"layer0.bn{i}"))
    else:
        out.update(_conv_bn("conv1", "layer0.conv1.weight", "layer0.bn1"))
    for unit in units(config):
        p, t = unit.keras_prefix, f"layer{unit.stage + 1}.{unit.index}"
        for i in (1, 2, 3):
            out.update(_conv_bn(f"{p}_{i}", f"{t}.conv{i}.weight", f"{t}.bn{i}"))
        for ours, theirs in (("reduce", "fc1"), ("expand", "fc2")):
            out[f"{p}_se/{ours}/kernel"] = (f"{t}.se_module.{theirs}.weight", pointwise_kernel)
            out[f"{p}_se/{ours}/bias"] = (f"{t}.se_module.{theirs}.bias", None)
        if unit.has_shortcut_conv:
            out.update(_conv_bn(f"{p}_0", f"{t}.downsample.0.weight", f"{t}.downsample.1"))
    if include_top:
        out.update(_classifier("last_linear"))
    return out


# timm's `architecture` names (its model entry points, what a timm repository's config.json
# names) of the networks this package builds, as each family's record lists them.
TIMM_ARCHITECTURES = {name: target for record in FAMILIES.values()
                      for name, target in record.timm_architectures.items()}


def timm_architecture(name):
    """The network (a config) of timm's architecture `name`."""
    target = TIMM_ARCHITECTURES.get(name)
    if target is None:
        raise ValueError(f"timm architecture {name!r} is not one this package builds; it "
                         f"builds {', '.join(TIMM_ARCHITECTURES)}")
    if isinstance(target, str):
        return get_model_config(target)
    base, changes = target
    return get_model_config(base).replace(name=name, **changes)


def timm_mapping(model_config, include_top=True):
    """{Keras weight path: (timm key, transform or None)} for a registry model."""
    return family_mapping("timm", model_config, include_top)


def resnet_timm_mapping(config, include_top=True):
    """`timm_mapping` of the ResNet family: timm's ResNet, or its legacy SENet port."""
    caffe_layout = (config.stride_in_reduce or config.stem != "7x7"
                    or config.stem_pool != "symmetric" or config.shortcut_kernel != 1)
    if caffe_layout and config.block == "bottleneck" and config.attention == "se":
        return _legacy_senet_mapping(config, include_top)
    if caffe_layout:
        # Same shapes as a timm ResNet, different function: refuse rather than mis-convert.
        raise ValueError(
            f"{config.name!r} has the layout of an official Caffe release, which no timm "
            "model shares; convert its Caffe weights with --source=caffe"
        )
    out = _conv_bn("conv1", "conv1.weight", "bn1")
    for unit in units(config):
        out.update(_unit(config, unit.keras_prefix, f"layer{unit.stage + 1}.{unit.index}",
                         unit.has_shortcut_conv))
    if include_top:
        out.update(_classifier("fc"))
    return out


def read_timm_checkpoint(path):
    """{key: float32 array} from a timm checkpoint, with no PyTorch and no code executed.

    `.safetensors` is read with `safetensors.numpy`; `.pth` / `.pth.tar` / `.pt` / `.bin`
    (PyTorch pickles, zip or legacy format) with the restricted reader of `convert.pth`.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            tensors = load_file(path)
        except Exception as e:
            raise ValueError(f"{path!r} is not a readable safetensors file: {e}") from None
    elif path.endswith((".pth", ".pth.tar", ".pt", ".bin", ".tar")):
        tensors = read_pth(path)
    else:
        raise ValueError(
            f"unknown timm checkpoint type {path!r}: expected .safetensors, .pth, .pth.tar or .bin"
        )
    return {k: np.asarray(v, np.float32) for k, v in tensors.items()
            if not k.endswith("num_batches_tracked")}


def keras_to_timm(model, model_config):
    """Export a Keras model's weights as a timm state_dict {key: array} (inverse mapping)."""
    variables = {w.path: w for w in model.weights}
    has_top = "predictions/kernel" in variables
    # Contiguous copies: safetensors writes raw buffers, a transposed view would be garbled.
    return {key: np.ascontiguousarray(INVERSE[fn](np.asarray(variables[path].numpy())))
            for path, (key, fn) in timm_mapping(model_config, include_top=has_top).items()}
