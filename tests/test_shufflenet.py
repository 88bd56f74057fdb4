"""The ShuffleNetV2 family: harness, counts against an independent count, the SK and SE
variants' layers, the torchvision converter against torchvision's own logits, weights.

Reference data (tests/data/*shufflenet_v2*): made once by hand with torch 2.14 +
torchvision 0.29 (docs/models/shufflenet_v2.md): `ShuffleNetV2([2, 1, 2], [8, 16, 32, 64,
128], num_classes=10)` and `shufflenet_v2_x0_5()`, BN statistics measured on a random batch
then perturbed, random BN affine and classifier bias; state_dicts saved with `torch.save`
(the x0.5 one in float16, torchvision run on the upcast values), logits of a fixed input.
"""

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import DATA_DIR
from harness import run_backbone_test
from sknet_keras import presets
from sknet_keras.analysis import attention_model, paper_unit_name
from sknet_keras.applications import build_model, shufflenet_v2
from sknet_keras.complexity import count_macs
from sknet_keras.convert import convert
from sknet_keras.convert.torchvision import read_torchvision_checkpoint, torchvision_mapping
from sknet_keras.layers import GroupConv2D, SelectiveKernel
from sknet_keras.layers import ChannelShuffle
from sknet_keras.models.shufflenet import ShuffleNetV2Config
from sknet_keras.registry import MODELS, get_entry

NAMES = ["shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x0_5_se",
         "shufflenet_v2_x1_0_se", "shufflenet_v2_x0_5_sk", "shufflenet_v2_x1_0_sk"]
TORCHVISION_PARAMS = {"shufflenet_v2_x0_5": 1_366_792, "shufflenet_v2_x1_0": 2_278_604}
# The torchvision reference mini network: stages_repeats [2, 1, 2], channels [8, 16, 32, 64, 128].
MINI = ShuffleNetV2Config("mini_shufflenet_v2", widths=(16, 32, 64), repeats=(2, 1, 2),
                          stem_width=8, head_width=128)


def golden(stem):
    g = np.load(os.path.join(DATA_DIR, f"{stem}.golden.npz"))
    return np.transpose(g["input_nchw"], (0, 2, 3, 1)), g["logits"]


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# --- an independent count, from the ShuffleNetV2 paper's layout (its Table 5, Fig. 3) ------

def _half(side):
    return (side - 1) // 2 + 1  # 3×3, stride 2, pad 1


def _depthwise(c, hw, sk):
    """(params, MACs) of a depthwise 3×3 + BN, or of SK[2, depthwise, r=4, L=32]."""
    if not sk:
        return 9 * c + 2 * c, 9 * c * hw
    d = max(c // 4, 32)
    return 2 * (9 * c + 2 * c) + c * d + 2 * d + 2 * c * d, 2 * 9 * c * hw + 3 * c * d


def expected_counts(widths, repeats=(4, 8, 4), attention=None, size=224, stem=24, head=1024,
                    classes=1000, sk_downsample=True):
    """(trainable params, multiply-adds) of a ShuffleNetV2, by arithmetic alone."""
    side = _half(size)
    params, macs = 27 * stem + 2 * stem, side * side * 27 * stem
    side, cin, sk = _half(side), stem, attention == "sk"
    for width, n in zip(widths, repeats):
        half, prev, side = width // 2, side, _half(side)
        hw = side * side
        for i in range(n):
            first_in = cin if i == 0 else half
            dw_p, dw_m = _depthwise(half, hw, sk)
            params += first_in * half + 2 * half + dw_p + half * half + 2 * half
            macs += (prev * prev if i == 0 else hw) * first_in * half + dw_m + hw * half * half
            if attention == "se":
                d = max(1, half // 16)
                params, macs = params + 2 * half * d + d + half, macs + 2 * half * d
            if i == 0:  # the downsampling branch: depthwise 3×3/2 + BN, 1×1 + BN + ReLU
                dw_p, dw_m = _depthwise(cin, hw, sk and sk_downsample)
                params, macs = params + dw_p + cin * half + 2 * half, macs + dw_m + hw * cin * half
        cin = width
    params += cin * head + 2 * head + head * classes + classes
    return params, macs + side * side * cin * head + head * classes


def _counts_of(config):
    width = {(48, 96, 192): "x0_5", (116, 232, 464): "x1_0"}[config.widths]
    return width, expected_counts(config.widths, attention=config.attention,
                                  sk_downsample=config.sk_downsample_branch)


@pytest.mark.parametrize("config", [MODELS[n] for n in NAMES] + [
    MODELS["shufflenet_v2_x1_0_sk"].replace(name="sk_main_only", sk_downsample_branch=False)],
    ids=NAMES + ["x1_0_sk_main_branch_only"])
def test_params_and_macs_equal_an_independent_count(config):
    model = build_model(config)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    _, (params, macs) = _counts_of(config)
    assert trainable == params
    assert count_macs(model) == macs
    if config.name in TORCHVISION_PARAMS:
        assert trainable == TORCHVISION_PARAMS[config.name]


def test_the_counter_knows_torchvisions_baselines():
    """The independent counter is anchored on torchvision's published parameter counts."""
    assert expected_counts((48, 96, 192))[0] == 1_366_792
    assert expected_counts((116, 232, 464))[0] == 2_278_604


# --- every registry network through the shared harness (mini configurations) --------------

@pytest.mark.parametrize("name", NAMES)
def test_registry_network_through_the_harness(name):
    config = MODELS[name].replace(name=f"mini_{name}", widths=(16, 32), repeats=(2, 1),
                                  stem_width=8, head_width=64)
    run_backbone_test(config)


# --- layers ---------------------------------------------------------------------------

def test_channel_shuffle_is_pytorchs_view_transpose_view(rng):
    x = rng.normal(size=(2, 3, 5, 12)).astype("float32")
    nchw = np.transpose(x, (0, 3, 1, 2))
    ref = nchw.reshape(2, 3, 4, 3, 5).transpose(0, 2, 1, 3, 4).reshape(2, 12, 3, 5)
    out = keras.ops.convert_to_numpy(ChannelShuffle(3)(x))
    np.testing.assert_array_equal(out, np.transpose(ref, (0, 2, 3, 1)))


def test_sk_variant_layers(rng):
    model = build_model("shufflenet_v2_x0_5_sk")
    sks = [layer for layer in model.layers if isinstance(layer, SelectiveKernel)]
    assert len(sks) == sum((4, 8, 4)) + 3  # every depthwise 3×3, the 3 downsampling ones too
    for sk in sks:
        c = sk.input.shape[-1]
        assert sk.filters == c and sk.branch_activation is None and sk.return_attention
        assert sk.branches == ((3, 1, c), (3, 2, c))  # M=2: 3×3 and 3×3 dilation 2, depthwise
        assert sk.attn_channels == max(c // 4, 32)
    plain = [layer for layer in model.layers if isinstance(layer, GroupConv2D)]
    assert [layer.name for layer in plain] == ["conv1_conv"]  # no depthwise conv left
    # No ReLU after the branch BN: the selected output takes negative values.
    probe = keras.Model(model.inputs, model.get_layer("conv3_block4_2_sk").output[0])
    assert probe.predict(rng.normal(size=(1, 224, 224, 3)), verbose=0).min() < 0
    names = set(attention_model(model).output)
    assert paper_unit_name("conv3_block4_2_sk") == "SK_3_4" and "SK_3_4" in names
    assert {"SK_2_1", "SK_4_4", "conv2_block1_0_dw_sk"} <= names and len(names) == len(sks)


def test_se_variant_puts_one_se_block_on_every_main_branch():
    model = build_model("shufflenet_v2_x1_0_se")
    se = [layer for layer in model.layers if layer.name.endswith("_se")]
    assert len(se) == 16 and model.get_layer("conv4_block1_se").input.shape[-1] == 232
    assert model.get_layer("conv4_block1_se").output.shape[-1] == 232
    assert model.get_layer("conv4_block1_se").reduce.units == 232 // 16


def test_bad_configurations_are_one_line_value_errors():
    base = MODELS["shufflenet_v2_x0_5"]
    for changes, message in [({"widths": (48, 97, 192)}, "even"),
                             ({"repeats": (4, 8)}, "one entry per stage"),
                             ({"attention": "cbam"}, "attention must be one of"),
                             ({"repeats": (4, 0, 4)}, "at least one unit"),
                             ({"sk_branch_activation": "gelu"}, "sk_branch_activation"),
                             ({"dropout": 1.0}, "dropout")]:
        with pytest.raises(ValueError, match=message) as e:
            base.replace(**changes)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="groups must be positive"):
        ChannelShuffle(0)
    with pytest.raises(ValueError, match="at least 32x32"):
        build_model("shufflenet_v2_x0_5", input_shape=(16, 16, 3))


# --- converter and weights ----------------------------------------------------------------

def test_mini_network_reproduces_torchvision_logits(tmp_path):
    out = tmp_path / "mini.h5"
    convert("torchvision", MINI, os.path.join(DATA_DIR, "mini_shufflenet_v2.random.pth"), out)
    x, logits = golden("mini_shufflenet_v2")
    model = build_model(MINI, input_shape=x.shape[1:], classes=10, classifier_activation=None,
                        weights=str(out))
    assert rel_err(model.predict(x, verbose=0), logits) < 1e-4


@pytest.mark.large
def test_full_network_reproduces_torchvision_logits_through_the_cli(tmp_path):
    out = tmp_path / "x0_5.h5"
    subprocess.run([sys.executable, "-m", "sknet_keras.convert", "--source=torchvision",
                    "--model=shufflenet_v2_x0_5", f"--output={out}",
                    f"--input={os.path.join(DATA_DIR, 'shufflenet_v2_x0_5.random.pth')}"],
                   check=True, capture_output=True)
    x, logits = golden("shufflenet_v2_x0_5")
    model = shufflenet_v2.ShuffleNetV2x05(weights=str(out), input_shape=x.shape[1:],
                                          classifier_activation=None)
    assert rel_err(model.predict(x, verbose=0), logits) < 1e-4


def test_converter_refuses_what_torchvision_does_not_publish(tmp_path):
    with pytest.raises(ValueError, match="torchvision publishes only the baselines"):
        torchvision_mapping("shufflenet_v2_x1_0_sk")
    with pytest.raises(ValueError, match="resnet network, which has no torchvision release"):
        torchvision_mapping("sknet50")
    with pytest.raises(ValueError, match="expected a .pth file"):
        read_torchvision_checkpoint(tmp_path / "weights.safetensors")
    mini = os.path.join(DATA_DIR, "mini_shufflenet_v2.random.pth")
    with pytest.raises(ValueError, match="does not hold a torchvision shufflenet_v2_x0_5"):
        convert("torchvision", "shufflenet_v2_x0_5", mini)
    full = os.path.join(DATA_DIR, "shufflenet_v2_x0_5.random.pth")
    with pytest.raises(ValueError, match="wrong shape"):  # same keys, 1.0× widths
        convert("torchvision", "shufflenet_v2_x1_0", full)
    assert "num_batches_tracked" not in " ".join(read_torchvision_checkpoint(mini))


def test_imagenet_weights_from_a_local_release_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("SKNET_KERAS_WEIGHTS_DIR", str(tmp_path))
    preset = presets.get_preset("shufflenet_v2_x0_5")
    local = tmp_path / preset.file_name
    shutil.copy(os.path.join(DATA_DIR, "shufflenet_v2_x0_5.random.pth"), local)
    x, logits = golden("shufflenet_v2_x0_5")

    def build():
        return shufflenet_v2.ShuffleNetV2x05(input_shape=x.shape[1:], classifier_activation=None)

    with pytest.raises(ValueError, match="is not the published shufflenetv2_x0.5"):
        build()  # our random file does not carry the published hash
    sha256 = hashlib.sha256(local.read_bytes()).hexdigest()
    monkeypatch.setitem(presets.PRESETS, "shufflenet_v2_x0_5.tv_in1k",
                        dataclasses.replace(preset, sha256=sha256[:10],
                                            size=local.stat().st_size + 500))
    assert rel_err(build().predict(x, verbose=0), logits) < 1e-4
    os.remove(local)  # now served from the converted cache
    assert rel_err(build().predict(x, verbose=0), logits) < 1e-4
    with pytest.raises(ValueError, match="no public ImageNet weights exist"):
        shufflenet_v2.ShuffleNetV2x10SK(weights="imagenet")


def test_applications_and_presets():
    builders = [shufflenet_v2.ShuffleNetV2x05, shufflenet_v2.ShuffleNetV2x10,
                shufflenet_v2.ShuffleNetV2x05SE, shufflenet_v2.ShuffleNetV2x10SE,
                shufflenet_v2.ShuffleNetV2x05SK, shufflenet_v2.ShuffleNetV2x10SK]
    assert [b.default_weights for b in builders] == ["imagenet"] * 2 + [None] * 4
    for name, file_name, sha256, top1 in [
            ("shufflenet_v2_x0_5", "shufflenetv2_x0.5-f707e7126e.pth", "f707e7126e", 60.552),
            ("shufflenet_v2_x1_0", "shufflenetv2_x1-5666bf0f80.pth", "5666bf0f80", 69.362)]:
        p = presets.get_preset(name)
        assert (p.source, p.file_name, p.sha256, p.top1) == ("torchvision", file_name, sha256,
                                                             top1)
        assert p.url == f"https://download.pytorch.org/models/{file_name}"
        assert p.size_tolerance == 524  # half of torchvision's last digit (0.001 MiB)
        assert (p.crop_fraction, p.interpolation, p.preprocessing) == (0.875, "bilinear",
                                                                       "torch")
    assert get_entry("shufflenet_v2_x1_0_sk").paper.gflops == 145.66


@pytest.mark.large
@pytest.mark.exhaustive  # the trainer's loop: test_trainer; this family's step: test_kernel_paths
def test_trainer_trains_the_sk_variant_by_name(tmp_path):
    subprocess.run([sys.executable, "-m", "sknet_keras.trainers.train",
                    "--model=shufflenet_v2_x0_5_sk", "--recipe=digits", "--max_steps=2",
                    "--batch_size=16", "--export=false", f"--model_dir={tmp_path}"],
                   check=True, capture_output=True)
    assert os.path.isfile(tmp_path / "result.json")
