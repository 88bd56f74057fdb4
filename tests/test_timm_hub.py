"""timm's checkpoints of the package's networks through keras-hub's own `from_preset`, after
`import sknet_keras.hub`: folders laid out as the Hugging Face timm repositories, with random,
non-trivial weights and BatchNorm statistics (rebuilt from tests/data/timm_hub's key lists by
tests/timm_random.py), give timm's logits and stage outputs (timm 1.0.31 computed them:
tools/make_timm_hub_goldens.py)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed "
                                "(pip install -e '.[hub]')")

import keras  # noqa: E402
from pth_writer import write_pth  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from timm_random import random_state  # noqa: E402

import sknet_keras.hub  # noqa: E402,F401 - what extends keras-hub's loader
from sknet_keras import internals  # noqa: E402
from sknet_keras.convert.timm import TIMM_ARCHITECTURES  # noqa: E402
from sknet_keras.hub import load_timm_preset  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "timm_hub")
ARCHITECTURES = sorted(os.listdir(DATA))
# In CI: one of each unit kind (SK bottleneck, SE bottleneck, the SENet release's layout,
# split attention).
FIFTY = {"skresnext50_32x4d", "seresnext50_32x4d", "legacy_seresnet50", "resnest50d"}


def _tier(arch):
    if arch == "skresnet18":
        return ()
    # The others: CI leaves them out for time (tens of seconds to minutes each).
    return (pytest.mark.large,) if arch in FIFTY else (pytest.mark.extra_large,
                                                       pytest.mark.exhaustive)


def _golden(arch):
    return np.load(os.path.join(DATA, arch, "golden.npz"))


def _repository(root, arch, weights_file="model.safetensors", config=None):
    """A folder laid out as timm's Hugging Face repository of `arch`, with the random state."""
    folder = root / arch
    folder.mkdir()
    if config is None:
        shutil.copy(os.path.join(DATA, arch, "config.json"), folder / "config.json")
    else:
        (folder / "config.json").write_text(json.dumps(config))
    with open(os.path.join(DATA, arch, "state_dict_keys.json")) as f:
        manifest = json.load(f)
    tensors = random_state(manifest["keys"], manifest["shapes"], manifest["seed"])
    if weights_file.endswith(".safetensors"):
        save_file(tensors, str(folder / weights_file))
    else:
        write_pth(str(folder / weights_file), tensors)
    return str(folder)


def _assert_logits(got, want, rtol=1e-4):
    got = np.asarray(got)
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max())
    assert (got.argmax(-1) == want.argmax(-1)).all()
    assert np.abs(want[0] - want[1]).max() > 1e-2 * np.abs(want).max()  # images differ


def _assert_pyramid(backbone, golden, x):
    features = keras.Model(backbone.inputs, backbone.pyramid_outputs)(x)
    for level in ("P2", "P3", "P4", "P5"):
        value = np.asarray(features[level])
        assert value.shape == tuple(golden[f"{level}_shape"]), level
        mean = golden[f"{level}_channel_mean"]
        np.testing.assert_allclose(value.mean(axis=(1, 2)), mean, rtol=0,
                                   atol=1e-4 * np.abs(mean).max(), err_msg=level)
        sampled = golden[f"{level}_values"]
        np.testing.assert_allclose(value.reshape(-1)[golden[f"{level}_index"]], sampled,
                                   rtol=0, atol=1e-4 * np.abs(sampled).max(), err_msg=level)


def test_every_architecture_has_a_timm_reference():
    assert sorted(TIMM_ARCHITECTURES) == ARCHITECTURES
    for arch in ARCHITECTURES:
        with open(os.path.join(DATA, arch, "config.json")) as f:
            assert json.load(f)["architecture"] == arch


@pytest.mark.parametrize("arch", [pytest.param(a, marks=_tier(a)) for a in ARCHITECTURES])
def test_from_preset_gives_timms_logits_and_stage_outputs(arch, tmp_path):
    folder = _repository(tmp_path, arch)
    golden = _golden(arch)
    x = golden["input_nchw"].transpose(0, 2, 3, 1)  # normalized, non-square
    classifier = keras_hub.models.ImageClassifier.from_preset(folder)
    assert isinstance(classifier, sknet_keras.hub.CLASSIFIERS[classifier.backbone.architecture
                                                               .family])
    _assert_logits(classifier(x), golden["logits"])
    del classifier
    backbone = keras_hub.models.Backbone.from_preset(folder)
    _assert_pyramid(backbone, golden, x)


@pytest.mark.large
def test_a_repository_with_pytorch_model_bin_loads_alike(tmp_path):
    folder = _repository(tmp_path, "skresnet18", weights_file="pytorch_model.bin")
    golden = _golden("skresnet18")
    classifier = keras_hub.models.ImageClassifier.from_preset(folder)
    _assert_logits(classifier(golden["input_nchw"].transpose(0, 2, 3, 1)), golden["logits"])


def test_the_preprocessor_is_the_checkpoints_pretrained_cfg(tmp_path):
    """crop_pct 0.875 of a 256×320 image at input size 224 is its centre 224×224 (timm: resize
    the short side to 256, centre-crop 224), then (x / 255 - mean) / std."""
    with open(os.path.join(DATA, "skresnet18", "config.json")) as f:
        config = json.load(f)
    cfg = config["pretrained_cfg"]
    assert (cfg["crop_pct"], cfg["interpolation"], cfg["input_size"]) == (0.875, "bicubic",
                                                                          [3, 224, 224])
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    converter = keras_hub.layers.ImageConverter.from_preset(str(folder))
    image = np.random.default_rng(0).uniform(0, 255, (2, 256, 320, 3)).astype("float32")
    want = (image[:, 16:240, 48:272] / 255 - np.array(cfg["mean"])) / np.array(cfg["std"])
    np.testing.assert_allclose(np.asarray(converter(image)), want, atol=1e-4)
    assert converter.get_config()["interpolation"] == "bicubic"

    # Another checkpoint's settings: no crop, another size and statistics.
    cfg.update(crop_pct=1.0, input_size=[3, 96, 96], mean=[0.5] * 3, std=[0.25] * 3)
    (folder / "config.json").write_text(json.dumps(config))
    converter = keras_hub.layers.ImageConverter.from_preset(str(folder))
    square = image[:, :96, :96]
    np.testing.assert_allclose(np.asarray(converter(square)), (square / 255 - 0.5) / 0.25,
                               atol=1e-4)


def test_other_architectures_stay_keras_hubs(tmp_path):
    with open(os.path.join(DATA, "skresnet18", "config.json")) as f:
        config = json.load(f)
    folder = tmp_path / "resnet18"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "resnet18"}))
    backbone = keras_hub.models.Backbone.from_preset(str(folder), load_weights=False)
    assert type(backbone) is keras_hub.models.ResNetBackbone
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "convnext_tiny"}))
    with pytest.raises(ValueError, match="KerasHub has no converter"):
        keras_hub.models.Backbone.from_preset(str(folder))


def test_a_repository_that_is_not_the_published_network_is_refused(tmp_path):
    with open(os.path.join(DATA, "skresnet18", "config.json")) as f:
        config = json.load(f)
    config["model_args"] = {**config.get("model_args", {}), "drop_path_rate": 0.0,
                            "output_stride": 16}
    folder = _repository(tmp_path, "skresnet18", config=config)
    with pytest.raises(ValueError, match="output_stride"):
        keras_hub.models.ImageClassifier.from_preset(folder)
    os.remove(os.path.join(folder, "model.safetensors"))
    config["model_args"].pop("output_stride")
    (tmp_path / "skresnet18" / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor "
                                                "pytorch_model.bin"):
        keras_hub.models.ImageClassifier.from_preset(folder)
    with pytest.raises(ValueError, match="not one this package builds"):
        (tmp_path / "skresnet18" / "config.json").write_text(json.dumps(
            {**config, "architecture": "skresnet50d"}))
        load_timm_preset(folder)


def test_the_hook_is_present_and_checked_in_this_keras_hub():
    import warnings

    internals.keras_hub_timm_loader.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", internals.InternalAPIWarning)
        module = internals.keras_hub_timm_loader.get()
    assert module is not None and getattr(module.TimmPresetLoader, "package_loader", False)


_WITHOUT_THE_HOOK = r"""
import sys, warnings
import numpy as np
sys.path.insert(0, {tests!r})
import keras_hub.src.utils.timm.preset_loader as loader
original = loader.TimmPresetLoader
{take_away}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import sknet_keras.hub
from sknet_keras import internals
named = [str(w.message) for w in caught if issubclass(w.category, internals.InternalAPIWarning)]
assert len(named) == 1 and "TimmPresetLoader" in named[0], named
golden = np.load({golden!r})
classifier = sknet_keras.hub.load_timm_preset({folder!r})
logits = np.asarray(classifier(golden["input_nchw"].transpose(0, 2, 3, 1)))
scale = np.abs(golden["logits"]).max()
assert np.abs(logits - golden["logits"]).max() <= 1e-4 * scale
print("ok")
"""


@pytest.mark.large
@pytest.mark.parametrize("take_away", [
    "del loader.TimmPresetLoader",  # moved
    # keras-hub's dispatch no longer reads the class from that module
    "import keras_hub.src.utils.preset_utils as pu\n"
    "pu.get_preset_loader = lambda preset, _c=original: _c.__new__(_c)",
], ids=["removed", "dispatch-changed"])
def test_without_keras_hubs_loader_load_timm_preset_still_loads(take_away, tmp_path):
    folder = _repository(tmp_path, "skresnet18")
    script = _WITHOUT_THE_HOOK.format(
        tests=os.path.dirname(__file__), take_away=take_away, folder=folder,
        golden=os.path.join(DATA, "skresnet18", "golden.npz"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
