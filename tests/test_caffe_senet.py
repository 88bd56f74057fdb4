"""The official SENet release (hujie-frank/SENet): builders, Caffe converter, weights.

No caffemodel of that release can be downloaded here, so the tests check the converted Keras
models against an independent executor of Caffe's layer semantics (`caffe_tools.run_caffe_net`:
grouped convs group by group, BatchNorm's moving-average factor, Scale, the SE branch, Axpy,
ceil-mode max pooling), on networks laid out and named as in the release's prototxts
(`senet_release_layers`). Facts transcribed from those prototxts pin the layouts.
"""

import os

import numpy as np
import pytest

from sknet_keras import applications, presets
from sknet_keras.applications import build_model, preprocess_input
from sknet_keras.convert import convert, source_to_keras
from caffe_tools import random_blobs, run_caffe_net, write_release
from caffe_writer import write_caffemodel
from sknet_keras.convert.caffe import caffe_mapping, caffemodel_tensors
from sknet_keras.convert.timm import keras_to_timm, timm_mapping
from sknet_keras.registry import MODELS, get_model_config

MINI_SERESNET = MODELS["seresnet50"].replace(
    name="mini_seresnet", depths=(1, 2, 1, 1), widths=(8, 16, 16, 32),
    out_channels=(32, 64, 64, 128), stem_width=16)
MINI_SERESNEXT = MODELS["seresnext50_caffe"].replace(
    name="mini_seresnext_caffe", depths=(2, 1, 1, 1), widths=(16, 32, 32, 64),
    out_channels=(32, 64, 128, 128), groups=4, stem_width=16)
MINI_SENET154 = MODELS["senet154"].replace(
    name="mini_senet154", depths=(1, 2, 1, 1), reduce_widths=(16, 16, 32, 32),
    widths=(32, 32, 64, 64), out_channels=(32, 64, 64, 128), groups=8, stem_width=16)


# ---------------------------------------------------------------------------------------
# The release's network definitions, as layer lists (name, type, bottoms, params).

def _conv(name, bottom, num_output, kernel=1, stride=1, pad=0, group=1, bias=False):
    return dict(name=name, type="Convolution", bottom=[bottom], top=name,
                num_output=num_output, kernel=kernel, stride=stride, pad=pad, group=group,
                bias=bias)


def _conv_bn(name, bottom, num_output, relu=True, **conv):
    layers = [_conv(name, bottom, num_output, **conv),
              dict(name=f"{name}/bn", type="BatchNorm", bottom=[name], top=name),
              dict(name=f"{name}/bn/scale", type="Scale", bottom=[name], top=name)]
    if relu:
        layers.append(dict(name=f"{name}/relu", type="ReLU", bottom=[name], top=name))
    return layers


def senet_release_layers(config, classes=1000):
    """The layer list of a SENet-release prototxt for a network shaped like `config`.

    Written from the release's SE-ResNet-50, SE-ResNeXt-50 and SENet-154 prototxts:
    `conv{s}_{u}_1x1_reduce` / `_3x3` / `_1x1_increase` (Convolution → BatchNorm → Scale),
    SE as `_global_pool` → `_1x1_down` (+bias) → ReLU → `_1x1_up` (+bias) → Sigmoid, the
    projection `_1x1_proj` (3×3 pad 1 in SENet-154's strided stages), an Axpy adding
    `up * increase` to the shortcut, ReLU; stem pool MAX 3/2 without padding (ceil mode).
    SE-ResNet puts the stride on the 1×1 reduce, SE-ResNeXt / SENet-154 on the 3×3.
    """
    layers = []
    if config.stem == "deep":
        w = config.stem_width
        layers += _conv_bn("conv1_1/3x3_s2", "data", w, kernel=3, stride=2, pad=1)
        layers += _conv_bn("conv1_2/3x3", "conv1_1/3x3_s2", w, kernel=3, pad=1)
        layers += _conv_bn("conv1_3/3x3", "conv1_2/3x3", 2 * w, kernel=3, pad=1)
        top, channels = "conv1_3/3x3", 2 * w
    else:
        layers += _conv_bn("conv1/7x7_s2", "data", config.stem_width, kernel=7, stride=2, pad=3)
        top, channels = "conv1/7x7_s2", config.stem_width
    layers.append(dict(name="pool1/3x3_s2", type="Pooling", bottom=[top], top="pool1/3x3_s2",
                       pool="MAX", kernel=3, stride=2))
    top = "pool1/3x3_s2"
    reduce_widths = config.reduce_widths or config.widths
    for s, depth in enumerate(config.depths):
        for u in range(depth):
            c = f"conv{s + 2}_{u + 1}"
            stride = 2 if (s > 0 and u == 0) else 1
            out = config.out_channels[s]
            layers += _conv_bn(f"{c}_1x1_reduce", top, reduce_widths[s],
                               stride=stride if config.stride_in_reduce else 1)
            layers += _conv_bn(f"{c}_3x3", f"{c}_1x1_reduce", config.widths[s], kernel=3,
                               pad=1, group=config.groups,
                               stride=1 if config.stride_in_reduce else stride)
            layers += _conv_bn(f"{c}_1x1_increase", f"{c}_3x3", out, relu=False)
            layers.append(dict(name=f"{c}_global_pool", type="Pooling",
                               bottom=[f"{c}_1x1_increase"], top=f"{c}_global_pool",
                               pool="AVE", global_pooling=True))
            layers.append(_conv(f"{c}_1x1_down", f"{c}_global_pool", out // 16, bias=True))
            layers.append(dict(name=f"{c}_1x1_down/relu", type="ReLU", bottom=[f"{c}_1x1_down"],
                               top=f"{c}_1x1_down"))
            layers.append(_conv(f"{c}_1x1_up", f"{c}_1x1_down", out, bias=True))
            layers.append(dict(name=f"{c}_prob", type="Sigmoid", bottom=[f"{c}_1x1_up"],
                               top=f"{c}_1x1_up"))
            shortcut = top
            if stride != 1 or channels != out:
                k = 3 if (config.shortcut_kernel == 3 and stride > 1) else 1
                layers += _conv_bn(f"{c}_1x1_proj", top, out, relu=False, kernel=k,
                                   stride=stride, pad=k // 2)
                shortcut = f"{c}_1x1_proj"
            layers.append(dict(name=c, type="Axpy",
                               bottom=[f"{c}_1x1_up", f"{c}_1x1_increase", shortcut], top=c))
            layers.append(dict(name=f"{c}/relu", type="ReLU", bottom=[c], top=c))
            top, channels = c, out
    # pool5/7x7_s1 (AVE 7, stride 1) covers the whole 7×7 map at 224: a global average.
    layers.append(dict(name="pool5/7x7_s1", type="Pooling", bottom=[top], top="pool5/7x7_s1",
                       pool="AVE", global_pooling=True))
    layers.append(dict(name="classifier", type="InnerProduct", bottom=["pool5/7x7_s1"],
                       top="classifier", num_output=classes))
    return layers


# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [MINI_SERESNET, MINI_SERESNEXT, MINI_SENET154],
                         ids=lambda c: c.name)
def test_converted_release_gives_the_caffe_outputs(config, tmp_path, rng):
    layers = senet_release_layers(config, classes=10)
    blobs = random_blobs(layers, 3, rng)
    path = tmp_path / f"{config.name}.caffemodel"
    write_release(path, layers, blobs)
    out = tmp_path / f"{config.name}.h5"
    convert("caffe", config, path, out)

    rgb = rng.uniform(0, 255, (2, 70, 86, 3)).astype("float32")  # odd sizes: ceil-mode pool
    bgr = preprocess_input(rgb.copy(), mode="senet")
    np.testing.assert_allclose(bgr, rgb[..., ::-1] - np.array([104, 117, 123], "float32"))
    expected = run_caffe_net(layers, blobs, bgr)
    model = build_model(config, input_shape=rgb.shape[1:], classes=10,
                        classifier_activation=None, weights=str(out))
    got = model.predict(bgr, verbose=0)
    assert float(np.abs(got - expected).max() / np.abs(expected).max()) < 1e-4


def test_the_reference_check_tells_stride_placements_apart(rng, tmp_path):
    """Stride placement is not cosmetic: SE-ResNet's weights in an SE-ResNeXt-style layout
    (stride on the 3×3) miss the Caffe outputs, so the test above would catch a misplaced
    stride."""
    layers = senet_release_layers(MINI_SERESNET, classes=10)
    blobs = random_blobs(layers, 3, rng)
    path = tmp_path / "mini.caffemodel"
    write_release(path, layers, blobs)
    x = rng.normal(0, 50, (1, 70, 86, 3)).astype("float32")
    expected = run_caffe_net(layers, blobs, x)
    errors = {}
    for stride_in_reduce in (True, False):
        config = MINI_SERESNET.replace(stride_in_reduce=stride_in_reduce)
        out = tmp_path / f"{stride_in_reduce}.h5"
        convert("caffe", config, path, out)
        model = build_model(config, input_shape=x.shape[1:], classes=10,
                            classifier_activation=None, weights=str(out))
        got = model.predict(x, verbose=0)
        errors[stride_in_reduce] = float(np.abs(got - expected).max() / np.abs(expected).max())
    assert errors[True] < 1e-4 and errors[False] > 1e-2, errors


# Facts read from the release's prototxts: layer → (num_output, kernel, stride, group).
OFFICIAL_FACTS = {
    "seresnet50": {
        "conv1/7x7_s2": (64, 7, 2, 1),
        "conv2_1_1x1_reduce": (64, 1, 1, 1), "conv2_1_3x3": (64, 3, 1, 1),
        "conv2_1_1x1_increase": (256, 1, 1, 1), "conv2_1_1x1_down": (16, 1, 1, 1),
        "conv2_1_1x1_up": (256, 1, 1, 1), "conv2_1_1x1_proj": (256, 1, 1, 1),
        "conv3_1_1x1_reduce": (128, 1, 2, 1), "conv3_1_3x3": (128, 3, 1, 1),
        "conv3_1_1x1_down": (32, 1, 1, 1), "conv3_1_1x1_proj": (512, 1, 2, 1),
        "conv5_3_1x1_down": (128, 1, 1, 1), "conv5_3_1x1_up": (2048, 1, 1, 1),
        "classifier": (1000, None, None, None),
    },
    "seresnext50_caffe": {
        "conv2_1_1x1_reduce": (128, 1, 1, 1), "conv2_1_3x3": (128, 3, 1, 32),
        "conv2_1_1x1_increase": (256, 1, 1, 1), "conv3_1_1x1_reduce": (256, 1, 1, 1),
        "conv3_1_3x3": (256, 3, 2, 32), "conv3_1_1x1_proj": (512, 1, 2, 1),
        "conv3_1_1x1_down": (32, 1, 1, 1),
    },
    "senet154": {
        "conv1_1/3x3_s2": (64, 3, 2, 1), "conv1_2/3x3": (64, 3, 1, 1),
        "conv1_3/3x3": (128, 3, 1, 1), "conv2_1_1x1_reduce": (128, 1, 1, 1),
        "conv2_1_3x3": (256, 3, 1, 64), "conv2_1_1x1_increase": (256, 1, 1, 1),
        "conv2_1_1x1_down": (16, 1, 1, 1), "conv2_1_1x1_proj": (256, 1, 1, 1),
        "conv3_1_1x1_reduce": (256, 1, 1, 1), "conv3_1_3x3": (512, 3, 2, 64),
        "conv3_1_1x1_proj": (512, 3, 2, 1), "conv5_3_3x3": (2048, 3, 1, 64),
        "conv5_3_1x1_increase": (2048, 1, 1, 1), "conv5_3_1x1_down": (128, 1, 1, 1),
        "classifier": (1000, None, None, None),
    },
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_FACTS))
def test_full_size_layouts_match_the_release_prototxts(name):
    config = get_model_config(name)
    layers = senet_release_layers(config)
    by_name = {layer["name"]: layer for layer in layers}
    for layer_name, (num_output, kernel, stride, group) in OFFICIAL_FACTS[name].items():
        layer = by_name[layer_name]
        assert layer["num_output"] == num_output, layer_name
        if kernel is not None:
            assert (layer["kernel"], layer["stride"], layer["group"]) == (kernel, stride, group)
    # The mapping names exactly the layers with blobs, with the release's blob shapes.
    model = build_model(config)
    shapes = {w.path: tuple(w.shape) for w in model.weights}
    blob_layers = {layer["name"]: layer for layer in layers
                   if layer["type"] in ("Convolution", "BatchNorm", "Scale", "InnerProduct")}
    mapping = caffe_mapping(config)
    assert {key.split("#")[0] for key, _ in mapping.values()} == set(blob_layers)
    for path, (key, _) in mapping.items():
        layer = blob_layers[key.split("#")[0]]
        if layer["type"] == "Convolution" and key.endswith("#0"):
            k = layer["kernel"]
            if path.endswith("_se/reduce/kernel") or path.endswith("_se/expand/kernel"):
                assert shapes[path][-1] == layer["num_output"], path
            else:
                assert shapes[path][:2] == (k, k) and shapes[path][-1] == layer["num_output"]
    # Strides in the Keras model where the release has them.
    assert model.get_layer("conv3_block1_1_conv").strides == (
        (2, 2) if config.stride_in_reduce else (1, 1))
    if config.dropout:
        assert model.get_layer("top_dropout").rate == pytest.approx(0.2)


@pytest.mark.large
def test_parameter_counts_equal_the_published_models():
    # Trainable parameters of the released networks (SENet / timm legacy_* model cards).
    expected = {"seresnet50": 28_088_024, "seresnet101": 49_326_872,
                "seresnet152": 66_821_848, "seresnext50_caffe": 27_559_896,
                "seresnext101_caffe": 48_955_416, "senet154": 115_088_984}
    for name, count in expected.items():
        model = build_model(name, weights=None)
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == count, name


def test_builders_and_imagenet_weights_from_a_local_release(tmp_path, monkeypatch, rng):
    assert applications.SEResNet50(include_top=False, input_shape=(64, 64, 3), weights=None,
                                   pooling="avg").output_shape == (None, 2048)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("SKNET_KERAS_WEIGHTS_DIR", str(tmp_path))
    # The release file stands in for the download (its hash cannot be the published one).
    preset = presets.get_preset("seresnet50")
    monkeypatch.setitem(presets.PRESETS, presets.preset_key("seresnet50"), presets.Preset(
        **{**preset.__dict__, "sha256": None, "size": None}))
    layers = senet_release_layers(MODELS["seresnet50"])
    blobs = random_blobs(layers, 3, rng)
    write_release(tmp_path / "SE-ResNet-50.caffemodel", layers, blobs)
    x = preprocess_input(rng.uniform(0, 255, (1, 96, 96, 3)).astype("float32"), mode="senet")
    model = applications.SEResNet50(input_shape=(96, 96, 3), classifier_activation=None)
    expected = run_caffe_net(layers, blobs, x)
    got = model.predict(x, verbose=0)
    assert float(np.abs(got - expected).max() / np.abs(expected).max()) < 1e-4
    # Converted once, then served from the cache.
    os.remove(tmp_path / "SE-ResNet-50.caffemodel")
    again = applications.SEResNet50(input_shape=(96, 96, 3), classifier_activation=None)
    np.testing.assert_array_equal(again.predict(x, verbose=0), got)


def test_release_errors_name_the_problem(tmp_path, rng):
    layers = senet_release_layers(MINI_SERESNET, classes=10)
    blobs = random_blobs(layers, 3, rng)
    del blobs["conv3_1_1x1_proj/bn/scale"]
    blobs["conv9_9_extra"] = [np.zeros((4,), "float32")]
    path = tmp_path / "broken.caffemodel"
    write_release(path, layers, blobs)
    with pytest.raises(ValueError, match=r"(?s)missing \(2\): conv3_1_1x1_proj/bn/scale#0.*"
                                         r"unexpected \(1\): conv9_9_extra#0"):
        source_to_keras("caffe", MINI_SERESNET, caffemodel_tensors(path), str(path))
    with pytest.raises(ValueError, match="use seresnext50_caffe"):
        caffe_mapping("seresnext50")
    with pytest.raises(ValueError, match="--source=caffe"):
        timm_mapping("sknet50_caffe")
    bad = {"conv1/7x7_s2/bn": [np.zeros(4, "float32")] * 2}
    write_caffemodel(tmp_path / "bn.caffemodel", bad, types={"conv1/7x7_s2/bn": "BatchNorm"})
    with pytest.raises(ValueError, match="BatchNorm layer 'conv1/7x7_s2/bn' has 2 blobs"):
        caffemodel_tensors(tmp_path / "bn.caffemodel")


# timm's legacy SENets (timm/models/senet.py, Cadene's port of the release): key → shape.
LEGACY_TIMM_FACTS = {
    "seresnet50": {"layer0.conv1.weight": (64, 3, 7, 7), "layer0.bn1.running_var": (64,),
                   "layer1.0.conv1.weight": (64, 64, 1, 1),
                   "layer2.0.conv1.weight": (128, 256, 1, 1),
                   "layer2.0.conv2.weight": (128, 128, 3, 3),
                   "layer1.0.se_module.fc1.weight": (16, 256, 1, 1),
                   "layer1.0.se_module.fc1.bias": (16,),
                   "layer4.2.se_module.fc2.weight": (2048, 128, 1, 1),
                   "layer2.0.downsample.0.weight": (512, 256, 1, 1),
                   "last_linear.weight": (1000, 2048)},
    "senet154": {"layer0.conv1.weight": (64, 3, 3, 3), "layer0.conv3.weight": (128, 64, 3, 3),
                 "layer0.bn3.weight": (128,), "layer1.0.conv1.weight": (128, 128, 1, 1),
                 "layer1.0.conv2.weight": (256, 2, 3, 3),
                 "layer1.0.downsample.0.weight": (256, 128, 1, 1),
                 "layer2.0.downsample.0.weight": (512, 256, 3, 3),
                 "layer3.35.conv3.weight": (1024, 1024, 1, 1),
                 "last_linear.bias": (1000,)},
}


@pytest.mark.large
@pytest.mark.parametrize("name", sorted(LEGACY_TIMM_FACTS))
def test_timm_legacy_senet_names_and_shapes(name):
    model = build_model(name)
    exported = keras_to_timm(model, name)
    for key, shape in LEGACY_TIMM_FACTS[name].items():
        assert exported[key].shape == shape, key
    assert not any(k.startswith(("conv1.", "fc.", "layer1.0.se.")) for k in exported)


def test_caffe_and_timm_legacy_routes_hold_the_same_network(tmp_path, rng):
    """A release converted from Caffe, exported in timm's legacy layout and converted back
    gives the same outputs (the `weights="imagenet"` path of SE-ResNet-152 / SENet-154)."""
    from safetensors.numpy import save_file

    layers = senet_release_layers(MINI_SENET154, classes=10)
    blobs = random_blobs(layers, 3, rng)
    write_release(tmp_path / "mini.caffemodel", layers, blobs)
    from_caffe = convert("caffe", MINI_SENET154, tmp_path / "mini.caffemodel")
    save_file(keras_to_timm(from_caffe, MINI_SENET154), str(tmp_path / "mini.safetensors"))
    from_timm = convert("timm", MINI_SENET154, tmp_path / "mini.safetensors")
    for a, b in zip(from_caffe.weights, from_timm.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
