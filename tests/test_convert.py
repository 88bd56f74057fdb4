"""timm and Caffe converters, `weights="imagenet"`, against timm's golden outputs (tests/data/README.md)."""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import (DATA_DIR, MINI_RESNEXT, MINI_SERESNEXT, MINI_SKRESNET, MINI_SKRESNEXT,
                      SHARED_REFERENCE)
from sknet_keras import applications
from sknet_keras.applications import build_model
from sknet_keras.convert import convert
from caffe_tools import (calibrate_batch_norms, prototxt_layers, random_blobs, run_caffe_net,
                         write_release)
from caffe_writer import write_caffemodel
from sknet_keras.convert.caffe import caffe_mapping, read_caffemodel
from sknet_keras.convert.common import INVERSE
from sknet_keras.convert.timm import keras_to_timm, read_timm_checkpoint
from sknet_keras.registry import get_model_config


def golden(stem, directory=DATA_DIR):
    g = np.load(os.path.join(directory, f"{stem}.golden.npz"))
    return np.transpose(g["input_nchw"], (0, 2, 3, 1)), g


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("config,stem", [(MINI_SKRESNEXT, "mini_skresnext"),
                                         (MINI_SKRESNET, "mini_skresnet"),
                                         (MINI_RESNEXT, "mini_resnext"),
                                         (MINI_SERESNEXT, "mini_seresnext")])
def test_mini_networks_reproduce_timm_logits(config, stem, tmp_path):
    out = tmp_path / f"{stem}.h5"
    convert("timm", config, os.path.join(DATA_DIR, f"{stem}.random.safetensors"), out)
    x, g = golden(stem)
    # Built at the reference's own size (64×80), not at the converter's 224.
    model = build_model(config, input_shape=x.shape[1:], classes=10,
                        classifier_activation=None, weights=str(out))
    assert rel_err(model.predict(x, verbose=0), g["logits"]) < 1e-5


@pytest.mark.extra_large
@pytest.mark.parametrize("model_name,stem", [  # SKNet-50 also: test_timm_hub, in CI
    pytest.param("sknet50", "skresnext50_32x4d", marks=pytest.mark.exhaustive),
    ("skresnet18", "skresnet18")])
def test_full_networks_reproduce_timm_logits_through_the_cli(model_name, stem, tmp_path):
    source = os.path.join(SHARED_REFERENCE, f"{stem}.random.safetensors")
    if not os.path.exists(source):
        pytest.skip(f"large reference file not available: {source} (kept outside the repo)")
    out = tmp_path / f"{model_name}.h5"
    subprocess.run([sys.executable, "-m", "sknet_keras.convert", "--source=timm",
                    f"--model={model_name}", f"--input={source}", f"--output={out}"],
                   check=True, capture_output=True)
    x, g = golden(stem, SHARED_REFERENCE)
    model = build_model(model_name, classifier_activation=None, weights=str(out))
    assert rel_err(model.predict(x, verbose=0), g["logits"]) < 1e-4
    if "pre_logits" in g:
        # Another input size than 224: the backbone still matches (pooled features).
        features = build_model(model_name, include_top=False, pooling="avg", weights=str(out))
        assert rel_err(features.predict(x, verbose=0), g["pre_logits"]) < 1e-4
        big = build_model(model_name, input_shape=(256, 288, 3), weights=str(out))
        assert big.predict(np.zeros((1, 256, 288, 3), "float32"), verbose=0).shape == (1, 1000)


def test_wrong_model_lists_missing_and_unexpected_and_writes_nothing(tmp_path):
    out = tmp_path / "out.h5"
    source = os.path.join(DATA_DIR, "mini_skresnext.random.safetensors")
    with pytest.raises(ValueError, match=r"(?s)does not hold a timm mini_skresnet.*missing "
                                         r"\(\d+\): .*unexpected \(\d+\): "):
        convert("timm", MINI_SKRESNET, source, out)
    wider = MINI_SKRESNEXT.replace(widths=(16, 16, 32, 64))
    with pytest.raises(ValueError, match=r"wrong shape \(\d+\): conv2_block1_1_bn/beta"):
        convert("timm", wider, source, out)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_bad_checkpoint_files(tmp_path):
    corrupt = tmp_path / "model.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        read_timm_checkpoint(corrupt)
    with pytest.raises(ValueError, match="unknown timm checkpoint type"):
        read_timm_checkpoint(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="input file not found"):
        convert("timm", "sknet50", tmp_path / "absent.safetensors")
    with pytest.raises(ValueError, match="unknown source"):
        convert("onnx", "sknet50", corrupt)
    (tmp_path / "model.pth").write_bytes(b"x")
    with pytest.raises(ValueError, match="is not a readable PyTorch checkpoint"):
        read_timm_checkpoint(tmp_path / "model.pth")
    garbage = tmp_path / "model.caffemodel"
    garbage.write_bytes(b"\xff" * 32)
    with pytest.raises(ValueError, match="caffemodel"):
        read_caffemodel(garbage)


def prototxt_param_layers(path):
    """{layer name: (type, num_output or None)} of every layer with weights in a prototxt."""
    text = open(path).read()
    layers = {}
    for block in re.split(r"\nlayer \{", text)[1:]:
        name = re.search(r'name: "([^"]+)"', block).group(1)
        kind = re.search(r'type: "([^"]+)"', block).group(1)
        if kind in ("Convolution", "CuDNNBatchNorm", "BatchNorm", "InnerProduct"):
            num = re.search(r"num_output: (\d+)", block)
            layers[name] = (kind, int(num.group(1)) if num else None)
    return layers


@pytest.mark.parametrize("model_name,prototxt", [("sknet50_caffe", "sknet50.prototxt"),
                                                 ("sknet101_caffe", "sknet101.prototxt")])
def test_caffe_mapping_names_every_official_layer_with_its_shape(model_name, prototxt):
    official = prototxt_param_layers(os.path.join(DATA_DIR, prototxt))
    model = build_model(model_name)
    shapes = {w.path: tuple(w.shape) for w in model.weights}
    mapping = caffe_mapping(model_name)
    mapped = {key.split("#")[0] for key, _ in mapping.values()}
    assert mapped == set(official)
    for path, (key, fn) in mapping.items():
        layer = key.split("#")[0]
        kind, num_output = official[layer]
        if num_output is not None and key.endswith("#0"):
            out_dim = shapes[path][-1]
            assert out_dim == num_output, (path, layer)


@pytest.mark.large
@pytest.mark.parametrize("model_name,prototxt", [("sknet50_caffe", "sknet50.prototxt"),
                                                 ("sknet101_caffe", "sknet101.prototxt")])
def test_the_official_prototxts_run_by_numpy_give_the_converted_models_logits(
        model_name, prototxt, tmp_path, rng):
    """Independent of the package's mapping: the official SKNet prototxts (implus/SKNet)
    with random blobs of its own shapes, executed layer by layer with Caffe's semantics in
    NumPy (`caffe_tools.run_caffe_net`: grouped and dilated convolutions, CuDNNBatchNorm,
    the attention's Reshape / Softmax / Slice / Scale / Axpy), against the caffemodel of
    those blobs converted by the package and run in Keras (SKNet-101: d=16 in conv3)."""
    layers = [layer for layer in prototxt_layers(os.path.join(DATA_DIR, prototxt))
              if layer["type"] not in ("SoftmaxWithLoss", "Accuracy")]
    # Its 7×7 average pool is global at 224² (a 7×7 map), which the Keras model's global
    # pool is at any size: global here, so that a small input runs.
    pool = next(layer for layer in layers if layer["top"] == layers[-1]["bottom"][0])
    assert (pool["pool"], pool["kernel"]) == ("AVE", 7), pool
    pool["global_pooling"] = True
    blobs = random_blobs(layers, 3, rng)
    # Statistics of a trained network: activations stay O(1) through 33 units, where float32
    # agrees with float64 to 1e-5 of the largest logit (random ones drift to the hundreds).
    blobs = calibrate_batch_norms(layers, blobs, rng.uniform(-120, 120, (4, 65, 81, 3)), rng)
    release = tmp_path / "release.caffemodel"
    write_release(release, layers, blobs)
    converted = tmp_path / f"{model_name}.h5"
    convert("caffe", model_name, release, converted)
    x = rng.uniform(-120, 120, (2, 65, 81, 3)).astype("float32")  # odd: ceil-mode pool
    want = run_caffe_net(layers, blobs, x, output="classifier")
    model = build_model(model_name, input_shape=x.shape[1:], classifier_activation=None,
                        weights=str(converted))
    got = model.predict(x, verbose=0)
    assert np.abs(want[0] - want[1]).max() > 0.05 * np.abs(want).max()  # images differ
    assert rel_err(got, want) < 1e-4, rel_err(got, want)
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_caffe_release_converts_to_the_same_numbers_as_timm(tmp_path, rng):
    """A caffemodel written with the official names holds the timm reference's numbers."""
    timm_model = convert("timm", MINI_SKRESNEXT,
                         os.path.join(DATA_DIR, "mini_skresnext.random.safetensors"))
    caffe_config = MINI_SKRESNEXT.replace(name="mini_caffe", stem_pool="caffe")
    variables = {w.path: w.numpy() for w in timm_model.weights}
    blobs = {}
    for path, (key, fn) in caffe_mapping(caffe_config).items():
        layer, index = key.split("#")
        value = INVERSE.get(fn, lambda w: w)(variables[path])
        blobs.setdefault(layer, {})[int(index)] = value
    caffemodel = tmp_path / "mini.caffemodel"
    write_caffemodel(caffemodel, {k: [v[i] for i in sorted(v)] for k, v in blobs.items()})
    converted = convert("caffe", caffe_config, caffemodel, tmp_path / "mini_caffe.h5")
    for w in converted.weights:
        np.testing.assert_array_equal(w.numpy(), variables[w.path])

    # Caffe's max pool: ceil mode, no padding.
    for size in (64, 66, 70):
        model = build_model(caffe_config, input_shape=(size, size, 3), classes=10,
                            weights=str(tmp_path / "mini_caffe.h5"))
        probe = keras.Model(model.inputs, [model.get_layer("conv1_relu").output,
                                           model.get_layer("pool1_pool").output])
        act, pooled = probe.predict(rng.random((1, size, size, 3), "float32"), verbose=0)
        h = act.shape[1]
        out = -(-(h - 3) // 2) + 1
        padded = np.pad(act, ((0, 0), (0, 2), (0, 2), (0, 0)), constant_values=-np.inf)
        ref = np.stack([np.stack([padded[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max((0, 1))
                                  for j in range(out)]) for i in range(out)])
        np.testing.assert_array_equal(pooled[0], ref)


def test_preprocessing_modes_and_the_caffe_sknet101_layout():
    assert applications.preprocessing_mode("sknet50") == "torch"
    assert applications.preprocessing_mode("sknet101_caffe") == "caffe"
    assert applications.preprocessing_mode("seresnet152") == "senet"
    assert get_model_config("sknet101_caffe").sk.stage_attn_channels == (None, 16, None, None)


@pytest.mark.large
@pytest.mark.parametrize("model_name,keys", [
    ("resnext50", {"layer1.0.conv2.weight": (128, 4, 3, 3), "layer1.0.bn2.running_var": (128,),
                   "layer2.0.downsample.0.weight": (512, 256, 1, 1), "fc.weight": (1000, 2048)}),
    ("seresnext50", {"layer1.0.se.fc1.weight": (16, 256, 1, 1), "layer1.0.se.fc1.bias": (16,),
                     "layer4.2.se.fc2.weight": (2048, 128, 1, 1)}),
])
def test_timm_layouts_of_plain_and_se_resnext_round_trip(model_name, keys, tmp_path, rng):
    """timm's Bottleneck names (conv1/bn1…, se.fc1/fc2) with timm's shapes, and back exactly."""
    model = build_model(model_name, input_shape=(64, 64, 3))
    state = keras_to_timm(model, model_name)
    for key, shape in keys.items():
        assert state[key].shape == shape, key
    assert not [k for k in state if "num_batches" in k]
    path = tmp_path / "m.safetensors"
    save_file(state, str(path))
    convert("timm", model_name, path, tmp_path / "m.h5")
    back = build_model(model_name, input_shape=(64, 64, 3), weights=str(tmp_path / "m.h5"))
    x = rng.random((1, 64, 64, 3), "float32")
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
