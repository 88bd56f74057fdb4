"""SE-BN-Inception of the official SENet release (hujie-frank/SENet).

Every check is against the release's own network definition, `data/se_bn_inception.prototxt`
(the release's `SE-BN-Inception.prototxt`, unchanged), parsed and executed with Caffe's layer
semantics by `caffe_tools` — never against the Keras model's own numbers. No caffemodel of
the release can be downloaded here: the converter is checked on caffemodels holding random
blobs of the release's shapes.
"""

import dataclasses
import os

import keras
import numpy as np
import pytest

from caffe_tools import (calibrate_batch_norms, caffe_pool, prototxt_layers, random_blobs,
                         run_caffe_net, write_release)
from conftest import DATA_DIR, SHARED_REFERENCE
from harness import run_backbone_test, run_layer_test
from sknet_keras import presets
from sknet_keras.applications import build_model, preprocess_input
from sknet_keras.applications.se_bn_inception import SEBNInception
from sknet_keras.complexity import count_macs
from sknet_keras.convert import convert
from sknet_keras.convert.caffe import caffe_mapping
from sknet_keras.layers.caffe_pooling import CaffePooling2D
from sknet_keras.models.bn_inception import BNInceptionConfig, keras_name
from sknet_keras.registry import get_model_config

PROTOTXT = os.path.join(DATA_DIR, "se_bn_inception.prototxt")
LAYERS = prototxt_layers(PROTOTXT)
BY_NAME = {layer["name"]: layer for layer in LAYERS}
CONFIG = get_model_config("se_bn_inception")
# Same layers, names and code paths, an eighth of the widths (the harness builds it 8 times).
MINI = CONFIG.replace(
    name="mini_se_bn_inception", stem_widths=(8, 8, 24), se_reduction=4,
    modules=tuple(dataclasses.replace(m, **{f: -(-getattr(m, f) // 8) for f in (
        "conv1x1", "reduce3x3", "conv3x3", "reduce_double", "conv_double", "pool_proj")})
        for m in CONFIG.modules))


def _rel(got, expected):
    return float(np.abs(got - expected).max() / np.abs(expected).max())


# --- the parser and the pooling layer ------------------------------------------------------

def test_the_prototxt_copy_is_the_release_file():
    reference = os.path.join(SHARED_REFERENCE, "senet", "SE-BN-Inception.prototxt")
    if not os.path.isfile(reference):
        pytest.skip(f"the release's prototxt is not at {reference}")
    with open(reference, "rb") as a, open(PROTOTXT, "rb") as b:
        assert a.read() == b.read()


def test_the_prototxt_parses_as_written():
    kinds = [layer["type"] for layer in LAYERS]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "Convolution": 89, "BatchNorm": 69, "Scale": 79, "ReLU": 79, "Pooling": 23,
        "Concat": 10, "Sigmoid": 10, "Reshape": 10, "InnerProduct": 1, "Softmax": 1}
    # Facts read off the file by eye.
    assert BY_NAME["conv1/7x7_s2"] == dict(
        name="conv1/7x7_s2", type="Convolution", bottom=["data"], top="conv1/7x7_s2",
        tops=["conv1/7x7_s2"], num_output=64, kernel=7, stride=2, pad=3, group=1, bias=False,
        dilation=1)
    assert BY_NAME["inception_5b/pool"]["pool"] == "MAX"
    assert (BY_NAME["inception_4e_1x1_down"]["num_output"], BY_NAME["inception_4e_1x1_down"]
            ["bias"]) == (66, True)
    assert BY_NAME["inception_3a_global_pool"]["global_pooling"] is True
    assert BY_NAME["inception_3c/concat"]["bottom"] == [
        "inception_3c/3x3", "inception_3c/double3x3b", "inception_3c/pool/3x3_s2"]
    assert BY_NAME["inception_5b_scale"]["axis"] == 0


@pytest.mark.parametrize("pool,k,s,p", [("avg", 3, 1, 1), ("avg", 3, 2, 1), ("avg", 7, 1, 0),
                                        ("max", 3, 2, 0), ("max", 3, 1, 1), ("max", 3, 2, 1)])
def test_caffe_pooling_gives_caffes_sizes_and_divisors(pool, k, s, p, rng):
    """Even and odd sizes: ceil-mode windows running off the edge, and (stride 2, pad 1)
    AVE windows running beyond the padded input, whose divisor Caffe clips."""
    layer = CaffePooling2D(pool, k, s, p)
    dynamic = keras.Model(inputs := keras.Input((None, None, 3)), layer(inputs))
    for h, w in ((8, 9), (14, 7), (11, 12)):
        x = rng.normal(size=(2, h, w, 3))
        expected = caffe_pool(x, pool.upper().replace("AVG", "AVE"), k, s, p)
        assert layer.compute_output_shape((2, h, w, 3)) == expected.shape
        for got in (layer(x.astype("float32")), dynamic.predict(x, verbose=0)):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_caffe_pooling_differs_from_keras_pooling_where_caffe_does(rng):
    x = rng.normal(size=(1, 8, 8, 2)).astype("float32")
    caffe = np.asarray(CaffePooling2D("avg", 3, 1, 1)(x))
    ours_keras = np.asarray(keras.layers.AveragePooling2D(3, 1, "same")(x))
    np.testing.assert_allclose(caffe[:, 1:-1, 1:-1], ours_keras[:, 1:-1, 1:-1], rtol=1e-5)
    corner = x[0, :2, :2].sum(axis=(0, 1))
    np.testing.assert_allclose(caffe[0, 0, 0], corner / 9, rtol=1e-5)  # padding zeros count
    np.testing.assert_allclose(ours_keras[0, 0, 0], corner / 4, rtol=1e-5)
    assert CaffePooling2D("max", 3, 2)(np.zeros((1, 112, 112, 1))).shape[1] == 56  # Keras: 55


def test_match_conv_adds_the_missing_window_only_for_odd_inputs(rng):
    x = rng.uniform(size=(1, 9, 10, 2)).astype("float32")
    grown = np.asarray(CaffePooling2D("max", 3, 2, match_conv=True)(x))
    caffe = caffe_pool(x, "MAX", 3, 2, 0)
    assert grown.shape[1:3] == (5, 5) and caffe.shape[1:3] == (4, 5)  # conv 3×3/2 pad 1: 5, 5
    np.testing.assert_allclose(grown[:, :4], caffe, rtol=1e-6)
    last_row = [x[0, 8, 2 * j:2 * j + 3].max(axis=0) for j in range(5)]  # input row 8 only
    np.testing.assert_allclose(grown[0, 4], np.stack(last_row), rtol=1e-6)


def test_caffe_pooling_layer_contract():
    run_layer_test(lambda: CaffePooling2D("avg", 3, 2, 1), (9, 8, 4), (5, 5, 4))
    with pytest.raises(ValueError, match="pool must be one of"):
        CaffePooling2D("ave")
    with pytest.raises(ValueError, match="strides <= pool_size"):
        CaffePooling2D("max", 2, 3)


# --- structure --------------------------------------------------------------------------------

def _keras_ops_of_release_tops(model):
    """Release blob name → name of the Keras layer that computes it."""
    ops = {"data": model.layers[0].name}
    for layer in LAYERS:
        kind, name = layer["type"], layer["name"]
        if kind == "Convolution" and not layer["bias"]:
            ops[layer["top"]] = keras_name(name) + "_relu"
        elif kind == "Pooling" and not layer["global_pooling"]:
            ops[layer["top"]] = keras_name(name)
        elif kind == "Concat":
            ops[layer["top"]] = keras_name(name)
        elif kind == "Scale" and len(layer["bottom"]) == 2:
            ops[layer["top"]] = name[:-len("_scale")] + "_se"
    return ops


def _inputs_of(model, name):
    tensors = keras.tree.flatten(model.get_layer(name).input)
    return [t._keras_history.operation.name for t in tensors]


def test_every_release_layer_is_in_the_model_with_its_settings():
    model = build_model("se_bn_inception")
    ops = _keras_ops_of_release_tops(model)
    seen = set()
    for layer in LAYERS:
        kind, name, bottoms = layer["type"], layer["name"], layer["bottom"]
        if kind == "Convolution" and not layer["bias"]:
            conv = model.get_layer(keras_name(name) + "_conv")
            assert (conv.filters, conv.kernel_size, conv.strides, conv.padding, conv.groups,
                    conv.use_bias) == (layer["num_output"], (layer["kernel"],) * 2,
                                       (layer["stride"],) * 2, (layer["pad"],) * 2,
                                       layer["group"], False), name
            assert model.get_layer(keras_name(name) + "_bn").epsilon == BY_NAME[f"{name}/bn"][
                "eps"]
            assert _inputs_of(model, conv.name) == [ops[bottoms[0]]], name
            seen.add(conv.name)
        elif kind == "Convolution":  # the SE block's 1×1 down / up, with bias
            se = model.get_layer(name.rsplit("_1x1_", 1)[0] + "_se")
            dense = se.reduce if name.endswith("_down") else se.expand
            assert dense.units == layer["num_output"] and dense.use_bias, name
        elif kind == "Pooling" and layer["global_pooling"]:
            se_input = _inputs_of(model, name[:-len("_global_pool")] + "_se")
            assert se_input == [ops[bottoms[0]]], name  # SE pools what it scales: the concat
        elif kind == "Pooling" and name != "pool5/7x7_s1":
            pool = model.get_layer(keras_name(name))
            assert (pool.pool, pool.pool_size, pool.strides, pool.padding) == (
                {"MAX": "max", "AVE": "avg"}[layer["pool"]], layer["kernel"], layer["stride"],
                layer["pad"]), name
            assert _inputs_of(model, pool.name) == [ops[bottoms[0]]], name
        elif kind == "Concat":
            assert _inputs_of(model, keras_name(name)) == [ops[b] for b in bottoms], name
    assert {layer.name for layer in model.layers if layer.name.endswith("_conv")} == seen
    # The release's head: pool5/7x7_s1 (AVE 7, stride 1, no pad) on the 7×7 map of a 224 (or
    # 227) input is one window, the global average; then the classifier, our Dense.
    pool5 = BY_NAME["pool5/7x7_s1"]
    assert (pool5["kernel"], pool5["stride"], pool5["pad"]) == (7, 1, 0)
    assert _inputs_of(model, "avg_pool") == [ops[pool5["bottom"][0]]]
    for size in (224, 227):
        features = build_model("se_bn_inception", include_top=False, input_shape=(size, size, 3))
        assert features.output_shape[1:3] == (7, 7)
    assert model.get_layer("predictions").units == BY_NAME["classifier"]["num_output"]


def test_mapping_names_every_release_blob_with_its_shape(rng):
    blobs = random_blobs(LAYERS, 3, rng)
    mapping = caffe_mapping("se_bn_inception")
    assert {key.split("#")[0] for key, _ in mapping.values()} == set(blobs)
    model = build_model("se_bn_inception")
    shapes = {w.path: tuple(w.shape) for w in model.weights}
    assert set(mapping) == set(shapes)
    for path, (key, transform) in mapping.items():
        layer, index = key.split("#")
        blob = blobs[layer][{"mean": 0, "var": 1}.get(index) if not index.isdigit()
                            else int(index)]
        assert (transform(blob) if transform else blob).shape == shapes[path], path


def test_parameter_count_and_multiply_adds_equal_the_prototxts():
    blobs = random_blobs(LAYERS, 3, np.random.default_rng(0))
    factors = sum(1 for layer in LAYERS if layer["type"] == "BatchNorm")
    total = sum(b.size for bs in blobs.values() for b in bs) - factors  # not the BN factor
    stats = sum(bs[0].size + bs[1].size for n, bs in blobs.items()
                if BY_NAME[n]["type"] == "BatchNorm")
    model = build_model("se_bn_inception")
    assert model.count_params() == total == 11_951_654
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == total - stats
    assert count_macs(model) == _prototxt_macs(224)


def _prototxt_macs(size):
    """Conv + InnerProduct multiply-adds of the prototxt at `size`, sizes per Caffe."""
    spatial, channels, macs = {"data": size}, {"data": 3}, 0
    for layer in LAYERS:
        kind, h, c = layer["type"], spatial[layer["bottom"][0]], channels[layer["bottom"][0]]
        spatial[layer["top"]], channels[layer["top"]] = h, c
        if kind == "Convolution":
            k, s, p = layer["kernel"], layer["stride"], layer["pad"]
            spatial[layer["top"]] = h = (h + 2 * p - k) // s + 1
            channels[layer["top"]] = layer["num_output"]
            macs += h * h * k * k * c // layer["group"] * layer["num_output"]
        elif kind == "Pooling":
            g = layer["global_pooling"]
            spatial[layer["top"]] = 1 if g else caffe_pool(
                np.zeros((1, h, 1, 1)), "MAX", layer["kernel"], layer["stride"],
                layer["pad"]).shape[1]
        elif kind == "Concat":
            channels[layer["top"]] = sum(channels[b] for b in layer["bottom"])
        elif kind == "InnerProduct":
            macs += h * h * c * layer["num_output"]
    return macs


# --- the converter against Caffe's semantics ---------------------------------------------

def _images(size, seed=0):
    rgb = np.random.default_rng(seed).uniform(0, 255, (1, size, size, 3)).astype("float32")
    return preprocess_input(rgb, mode="senet")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A caffemodel of the release's layers and shapes: random blobs, BatchNorm statistics
    calibrated on another image (`calibrate_batch_norms` says why)."""
    rng = np.random.default_rng(7)
    blobs = calibrate_batch_norms(LAYERS, random_blobs(LAYERS, 3, rng), _images(224, seed=99),
                                  rng)
    path = tmp_path_factory.mktemp("release") / "SE-BN-Inception.caffemodel"
    write_release(path, LAYERS, blobs)
    return path, blobs


@pytest.mark.large
def test_converted_release_gives_caffes_logits(release, tmp_path, monkeypatch):
    """224 and 227 (pool1 runs off the edge at both; 227's 57×57 map is odd) with the
    classifier; a negative control with Keras' AVE divisor misses by far more than 1e-4."""
    path, blobs = release
    weights = tmp_path / "converted.h5"
    convert("caffe", "se_bn_inception", path, weights)
    errors = {}
    for size in (224, 227):
        x = _images(size)
        expected = run_caffe_net(LAYERS, blobs, x, output="classifier")
        model = build_model("se_bn_inception", input_shape=x.shape[1:], weights=str(weights),
                            classifier_activation=None)
        errors[size] = _rel(model.predict(x, verbose=0), expected)

    def keras_divisor(self, size, out):  # the window clipped to the input: Keras' rule
        start = keras.ops.arange(out, dtype="int32") * self.strides - self.padding
        end = keras.ops.minimum(start + self.pool_size, size)
        return keras.ops.cast(end - keras.ops.maximum(start, 0), "float32")

    monkeypatch.setattr(CaffePooling2D, "_avg_divisor", keras_divisor)
    probe = _images(12)[..., :2]
    np.testing.assert_allclose(CaffePooling2D("avg", 3, 1, 1)(probe),
                               keras.layers.AveragePooling2D(3, 1, "same")(probe), rtol=1e-5)
    model = build_model("se_bn_inception", input_shape=x.shape[1:], weights=str(weights),
                        classifier_activation=None)
    errors["keras_divisor"] = _rel(model.predict(x, verbose=0), expected)
    print("relative errors:", errors)
    assert errors[224] <= 1e-4 and errors[227] <= 1e-4 and errors["keras_divisor"] > 1e-2, errors


def test_imagenet_weights_from_a_local_release_file(release, tmp_path, monkeypatch):
    """The file is found in $SKNET_KERAS_WEIGHTS_DIR and checked against the published size
    and sha384; a file that is not the publisher's is refused. The test file becomes
    acceptable by setting the preset's hash and size to its own (monkeypatched)."""
    path, blobs = release
    folder = tmp_path / "weights"
    folder.mkdir()
    os.symlink(path, folder / "SE-BN-Inception.caffemodel")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("SKNET_KERAS_WEIGHTS_DIR", str(folder))
    with pytest.raises(ValueError, match=r"is not the published SE-BN-Inception.caffemodel: it "
                                         r"has [\d,]+ bytes, the publisher states 47,855,246"):
        SEBNInception()
    import hashlib

    preset = presets.get_preset("se_bn_inception")
    monkeypatch.setitem(presets.PRESETS, presets.preset_key("se_bn_inception"), dataclasses.replace(
        preset, size=os.path.getsize(path),
        sha384=hashlib.sha384(path.read_bytes()).hexdigest()))
    model = SEBNInception(include_top=False, input_shape=(64, 64, 3))
    kernel = model.get_layer("inception_4e_double3x3b_conv").kernel.numpy()
    np.testing.assert_array_equal(
        kernel, np.transpose(blobs["inception_4e/double3x3b"][0], (2, 3, 1, 0)))
    bn = blobs["conv1/7x7_s2/bn"]
    np.testing.assert_allclose(model.get_layer("conv1_7x7_s2_bn").moving_variance.numpy(),
                               bn[1] / bn[2][0], rtol=1e-6)
    cached = os.listdir(tmp_path / "keras_home" / "models" / "sknet_keras")
    assert [f for f in cached if not f.endswith(".lock")] == [
        "se_bn_inception.SE-BN-Inception.h5"]  # converted once, cached (beside its lock file)


# --- the shared contract ------------------------------------------------------------------

def test_backbone_contract_on_a_narrow_copy():
    """Config / .keras / checkpoint / SavedModel round trips, mixed precision, batch 1,
    variable input sizes (64×80 and 96×112: odd maps before 4e, where `match_conv` grows the
    reduction pool), a fit step."""
    run_backbone_test(MINI, input_size=64)


def test_registry_builders_and_bad_configs():
    assert SEBNInception(weights=None, include_top=False, input_shape=(None, None, 3),
                         pooling="avg").output_shape == (None, 1024)
    with pytest.raises(ValueError, match="at least 32x32"):
        SEBNInception(weights=None, input_shape=(31, 31, 3))
    with pytest.raises(ValueError, match="se_reduction must be None or >= 1"):
        BNInceptionConfig("bad", se_reduction=0)
    with pytest.raises(ValueError, match="module 3a: pool must be one of"):
        dataclasses.replace(CONFIG.modules[0], pool="ave")
    plain = CONFIG.replace(name="bn_inception_plain", se_reduction=None)
    assert not any("_se" in w.path for w in build_model(plain).weights)
    assert len(caffe_mapping(plain)) == len(caffe_mapping(CONFIG)) - 40


@pytest.mark.large
@pytest.mark.exhaustive  # the trainer's loop: test_trainer; this family's step: test_kernel_paths
def test_the_trainer_trains_it_by_name(tmp_path):
    """By its registry name, with the digits recipe: two steps update every layer (each BN's
    moving mean has left its initial 0) and the run's weights file evaluates to its result."""
    from sknet_keras.trainers.configs import recipe
    from sknet_keras.trainers.experiment import run_experiment
    from sknet_keras.weights.files import read_weights

    config = recipe("digits").override(name="se_bn_inception", image_size=64, max_steps=2,
                                       steps_per_epoch=2, batch_size=8, precision="float32")
    result = run_experiment(config, "train", str(tmp_path), exports=("weights",))
    assert result["val_examples"] == 360 and np.isfinite(result["train_loss_last_epoch"])
    tensors = read_weights(str(tmp_path / "final.weights.h5"))[0]
    means = {k: v for k, v in tensors.items() if k.endswith("moving_mean")}
    assert len(means) > 60 and not [k for k, v in means.items() if not np.any(v)]
    assert tensors["predictions/kernel"].shape == (1024, 10)
    keras.backend.clear_session()
    scores = run_experiment(config.override(weights=str(tmp_path / "final.weights.h5")),
                            "eval")
    assert scores[64]["top1"] == result["val_top1"]
