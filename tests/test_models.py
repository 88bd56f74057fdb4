"""Every model family and every layer through the shared harness (tests/harness.py)."""

import dataclasses

import keras
import pytest

from conftest import MINI_SKRESNET, MINI_SKRESNEXT
from harness import run_backbone_test, run_layer_test
from sknet_keras.layers import (GroupConv2D, SelectiveKernel, SelectiveKernelAttn,
                                SplitAttention, SqueezeExcite)
from sknet_keras.registry import MODELS
from test_kernel_paths import MINI_RESNEST

MINI = {
    "sk_resnext": MINI_SKRESNEXT,
    "sk_resnet_split_input": MINI_SKRESNET,
    "resnext": MINI_SKRESNEXT.replace(name="mini_resnext", attention=None),
    "se_resnext": MINI_SKRESNEXT.replace(name="mini_seresnext", attention="se"),
    "se_resnet_caffe_layout": MODELS["seresnet50"].replace(
        name="mini_seresnet", depths=(1, 1, 1, 1), widths=(8, 16, 32, 64),
        out_channels=(32, 64, 128, 256)),
    "senet154_layout": MODELS["senet154"].replace(
        name="mini_senet154", depths=(1, 1, 1, 1), reduce_widths=(8, 16, 32, 64),
        widths=(16, 32, 64, 128), out_channels=(32, 64, 128, 256), groups=4),
    "resnest": MINI_RESNEST,
    "resnest_radix1_avd_first": MINI_RESNEST.replace(name="mini_resnest_1s", radix=1,
                                                      cardinality=4, avd_first=True),
}


@pytest.mark.parametrize("name", sorted(MINI))
def test_family_through_the_harness(name):
    run_backbone_test(MINI[name])


@pytest.mark.parametrize("make,shape", [
    (lambda: GroupConv2D(16, 3, strides=2, dilation_rate=2, groups=4), (9, 9, 16)),
    (lambda: SelectiveKernel(16, branches=[(3, 1), (3, 3, 2)], groups=4, strides=2,
                             return_attention=True, min_attn_channels=8), (9, 9, 16)),
    (lambda: SelectiveKernel(16, groups=4, attention=False), (8, 8, 16)),
    (lambda: SqueezeExcite(4), (5, 5, 16)),
    (lambda: SplitAttention(16, radix=2, groups=2, strides=2, return_attention=True),
     (9, 9, 16)),
])
def test_layer_through_the_harness(make, shape):
    run_layer_test(make, shape)


def test_selective_kernel_attention_layer_through_the_harness():
    """Its output, the attention, is float32 under mixed precision (softmax in float32)."""
    run_layer_test(lambda: SelectiveKernelAttn(3, 8), (6, 6, 16), expected_output_shape=(3, 16),
                   mixed_output_dtype="float32")


def test_every_family_record_ties_its_parts_together():
    """`models.FAMILIES`: each record's name is its configs' `family`, its entries are of its
    config class, and each converter it names is a function of the convert package."""
    import importlib

    from sknet_keras.models import CONFIG_CLASSES, FAMILIES

    assert set(FAMILIES) == {"resnet", "bn_inception", "shufflenet_v2", "resnest"}
    for name, record in FAMILIES.items():
        assert record.name == name and CONFIG_CLASSES[name] is record.config_class
        assert record.entries and all(isinstance(e.config, record.config_class)
                                      and e.config.family == name for e in record.entries)
        assert record.converters and record.hub_name
        for source, target in record.converters.items():
            module, function = target.split(":")
            assert module.startswith("sknet_keras.convert.")
            assert callable(getattr(importlib.import_module(module), function)), target


# A family the package does not have, written as a user would add one: a config, a
# backbone, a converter, and one record; nothing else is edited.
@dataclasses.dataclass(frozen=True)
class _TinyConfig:
    name: str = "tiny_plain"
    width: int = 4
    family = "tiny_plain"


def _tiny_backbone(inputs, config):
    return keras.layers.Conv2D(config.width, 3, name="conv1_conv")(inputs)


def _tiny_timm_mapping(config, include_top=True):
    return {"conv1_conv/kernel": ("conv1.weight", None)}


def test_a_new_family_is_one_record(monkeypatch):
    from sknet_keras.convert.timm import timm_mapping
    from sknet_keras.models import FAMILIES
    from sknet_keras.models.entry import Family
    from sknet_keras.models.network import build_network

    config = _TinyConfig()
    monkeypatch.setitem(FAMILIES, "tiny_plain", Family(
        "tiny_plain", _TinyConfig, _tiny_backbone, lambda c: {}, (),
        converters={"timm": f"{__name__}:_tiny_timm_mapping"}))
    model = build_network(config, keras.Input((8, 8, 3)), classes=3)
    assert model.output_shape == (None, 3) and model.get_layer("conv1_conv").filters == 4
    assert timm_mapping(config) == {"conv1_conv/kernel": ("conv1.weight", None)}
    with pytest.raises(ValueError, match="tiny_plain network, which has no caffe release"):
        from sknet_keras.convert.caffe import caffe_mapping
        caffe_mapping(config)
