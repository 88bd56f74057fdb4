"""Every network of the papers' ResNet family, by registry name: parameters and multiply-adds
held to an independent count (tests/resnet_counter.py), beside the paper's figures."""

import keras
import numpy as np
import pytest

from resnet_counter import count
from sknet_keras.applications import build_model
from sknet_keras.complexity import count_macs
from sknet_keras.registry import ENTRIES, MODELS

pytestmark = pytest.mark.extra_large

# The names of the SKNet paper's Tables 3, 5 (CIFAR), 6 and 7 (part of the interface).
PAPER_NAMES = (
    "resnext50_wider", "resnext56", "resnext50_36x4d",
    "sknet50_k3d3", "sknet50_k3d1", "sknet50_k5g64", "sknet50_k7g128",
    "sknet50_k5", "sknet50_k7", "sknet50_k3k5_sum", "sknet50_k3k7", "sknet50_k3k7_sum",
    "sknet50_k5k7", "sknet50_k5k7_sum", "sknet50_k3k5k7", "sknet50_k3k5k7_sum",
    "resnext29_8x64d", "resnext29_16x32d", "resnext29_16x64d", "senet29", "sknet29",
)


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_the_counter_reproduces_published_counts():
    """The independent counter itself, on counts published elsewhere (timm / the releases)."""
    published = {"sknet50": 27_479_784, "resnext50": 25_028_904, "seresnext50": 27_559_896,
                 "seresnet50": 28_088_024, "senet154": 115_088_984, "skresnet18": 11_958_056}
    for name, params in published.items():
        assert count(MODELS[name])[0] == params, name


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_paper_network_counts(name):
    entry = ENTRIES[name]
    config = entry.config
    size, classes = (32, 10) if config.stem == "cifar" else (224, 1000)
    model = build_model(name, input_shape=(size, size, 3), classes=classes)
    params, macs = count(config, size, classes)
    assert _trainable(model) == params
    assert count_macs(model) == macs
    # Within the papers' rounding and construction slack (docs/models/ablations.md).
    assert abs(params / 1e6 - entry.paper.params_m) / entry.paper.params_m < 0.025 \
        if entry.paper and entry.paper.params_m else True
    if entry.paper and entry.paper.gflops:
        assert abs(macs / 1e9 - entry.paper.gflops) / entry.paper.gflops < 0.015
    keras.backend.clear_session()


def test_ablation_layers_are_what_their_names_say():
    model = build_model("sknet50_k5g64", input_shape=(224, 224, 3))
    sk = model.get_layer("conv3_block2_2_sk")
    assert sk.branches == ((3, 1, 32), (5, 1, 64)) and sk.attention
    summed = build_model("sknet50_k3k5k7_sum", input_shape=(224, 224, 3))
    sk = summed.get_layer("conv4_block1_2_sk")
    assert [d for _, d, _ in sk.branches] == [1, 2, 3] and not sk.attention
    cifar = build_model("sknet29", input_shape=(32, 32, 3), classes=10)
    assert cifar.get_layer("conv1_conv").kernel.shape == (3, 3, 3, 64)
    assert cifar.get_layer("conv4_block3_out").output.shape[1:] == (8, 8, 1024)
    sk = cifar.get_layer("conv2_block1_2_sk")
    assert sk.filters == 512 and sk.branches == ((3, 1, 32), (3, 2, 32))
