"""keras-hub integration (`sknet_keras.hub`): every family's backbone and classifier give
this package's outputs on images, survive a preset round trip, and drive keras-hub's
detector and segmenter. References are independent of the hub code: `build_model`'s
network on images preprocessed by `preprocess_input` (Keras' own imagenet_utils)."""

import dataclasses
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed "
                                "(pip install -e '.[hub]')")

from harness import _randomize  # noqa: E402
from sknet_keras import hub  # noqa: E402
from sknet_keras.applications import build_model, preprocess_input  # noqa: E402
from sknet_keras.models.serialization import config_from_dict  # noqa: E402
from test_kernel_paths import FAMILY_NAMES, family_config  # noqa: E402

SIZE = 64
MODES = ("torch", "caffe", "senet", "tf")


def _images(count=4, size=SIZE, seed=0):
    """RGB images in [0, 255] that differ in colour, contrast and structure."""
    from sknet_keras.export import check_images

    return check_images(size, count, seed)


def _network(config, classes=7, size=SIZE, seed=1):
    keras.utils.set_random_seed(seed)
    model = build_model(config, input_shape=(size, size, 3), classes=classes,
                        classifier_activation=None)
    _randomize(model, seed)
    for w in model.get_layer("predictions").weights:  # the image, not the bias, decides
        w.assign(np.random.default_rng(seed).normal(0, 0.3 if w.ndim > 1 else 0, w.shape))
    return model


def _assert_close(got, want, rtol=1e-4):
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale + 1e-6)
    assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.large
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_classifier_gives_the_networks_logits_through_a_preset(family, tmp_path):
    config = family_config(family)
    mode = MODES[FAMILY_NAMES.index(family) % len(MODES)]  # every mode over the families
    network = _network(config)
    classifier = hub.image_classifier(config, classes=7, image_size=SIZE, normalization=mode,
                                      network=network)
    x = _images()
    want = network.predict(preprocess_input(x.copy(), mode=mode), verbose=0)
    assert np.std(want, axis=0).mean() > 1e-2 * np.abs(want).max()  # image-dependent
    _assert_close(classifier.predict(x, verbose=0), want)

    classifier.save_to_preset(str(tmp_path))
    loaded = keras_hub.models.ImageClassifier.from_preset(str(tmp_path))
    assert type(loaded) is type(classifier)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), classifier.predict(x, verbose=0))

    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path))
    assert type(backbone) is hub.BACKBONES[config.family]
    assert config_from_dict(type(config), backbone.get_config()["architecture"]) == config
    pyramid = keras.Model(backbone.inputs, backbone.pyramid_outputs)
    features = pyramid(preprocess_input(x.copy(), mode=mode))
    levels = sorted(features)
    assert levels[:3] == ["P2", "P3", "P4"]  # mini ShuffleNets stop at P4
    for level in levels:
        assert features[level].shape[1:3] == (SIZE >> int(level[1:]),) * 2, level
    # the last feature map is the network's input to its pooling
    inner = keras.Model(network.inputs, network.get_layer("avg_pool").input)
    _assert_close(np.asarray(backbone(preprocess_input(x.copy(), mode=mode))).mean((1, 2)),
                  np.asarray(inner(preprocess_input(x.copy(), mode=mode))).mean((1, 2)))


def test_a_backbone_refuses_another_familys_architecture():
    with pytest.raises(ValueError, match="ShuffleNetV2Backbone builds the shufflenet_v2 family"):
        hub.ShuffleNetV2Backbone(architecture="mini_sknet")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['depth'\]"):
        hub.SKNetBackbone(architecture={"name": "x", "depth": 3})
    with pytest.raises(ValueError, match="channel_order must be 'rgb' or 'bgr'"):
        hub.SKNetImageConverter(channel_order="gbr")


def _mini_sknet_backbone(seed=1):
    network = _network("mini_sknet", seed=seed)
    backbone = hub.backbone("mini_sknet")
    hub.copy_weights(network, backbone)
    return backbone


def _one_step_changes_the_weights(task, x, y):
    before = [np.array(w) for w in task.trainable_weights]
    task.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    after = [np.array(w) for w in task.trainable_weights]
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert all(np.isfinite(a).all() for a in after)
    backbone_weights = {id(w) for w in task.backbone.trainable_weights}
    # the SKNet backbone trains too, not only the task's head
    assert any(c for c, w in zip(changed, task.trainable_weights) if id(w) in backbone_weights)


def _round_trip(task, x, tmp_path):
    task.save_to_preset(str(tmp_path))
    loaded = type(task).from_preset(str(tmp_path))
    for a, b in zip(keras.tree.flatten(task.predict(x, verbose=0)),
                    keras.tree.flatten(loaded.predict(x, verbose=0))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)


@pytest.mark.large
def test_retinanet_on_an_sknet_backbone_trains_and_round_trips(tmp_path):
    from keras_hub.layers import AnchorGenerator

    encoder = _mini_sknet_backbone()
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3,
                                                  max_level=5, use_p5=False,
                                                  image_shape=(SIZE, SIZE, 3))
    anchors = AnchorGenerator(bounding_box_format="yxyx", min_level=3, max_level=5,
                              num_scales=3, aspect_ratios=[0.5, 1.0, 2.0], anchor_size=4)
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=3, bounding_box_format="yxyx", anchor_generator=anchors)
    detector.compile(optimizer=keras.optimizers.SGD(0.01))
    x = preprocess_input(_images(2), mode="torch")
    raw = detector(x)  # box and class outputs at every anchor
    assert raw["bbox_regression"].shape[-1] == 4 and raw["cls_logits"].shape[-1] == 3
    y = {"boxes": np.array([[[8, 8, 40, 40]], [[20, 10, 60, 50]]], "float32"),
         "labels": np.array([[1], [2]], "int32")}
    _one_step_changes_the_weights(detector, x, y)
    detector.save_to_preset(str(tmp_path))
    loaded = keras_hub.models.RetinaNetObjectDetector.from_preset(str(tmp_path))
    for key in ("bbox_regression", "cls_logits"):
        np.testing.assert_allclose(np.asarray(loaded(x)[key]), np.asarray(detector(x)[key]),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.large
def test_deeplabv3_on_an_sknet_backbone_trains_and_round_trips(tmp_path):
    encoder = _mini_sknet_backbone()
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P5", upsampling_size=8,
        dilation_rates=[2, 4], low_level_feature_key="P2", image_shape=(SIZE, SIZE, 3))
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=3)
    segmenter.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = preprocess_input(_images(2), mode="torch")
    masks = np.asarray(segmenter(x))
    assert masks.shape == (2, SIZE, SIZE, 3)  # per-pixel logits at the input's size
    assert np.std(masks, axis=(1, 2)).mean() > 0  # they vary over the image
    y = np.random.default_rng(0).integers(0, 3, (2, SIZE, SIZE, 1))
    _one_step_changes_the_weights(segmenter, x, y)
    _round_trip(segmenter, x, tmp_path)


@pytest.mark.large
def test_the_hub_command_writes_a_preset_that_gives_the_weights_logits(tmp_path):
    from sknet_keras.weights.files import save_weights

    size = 32
    network = _network("mini_sknet", classes=10, size=size)
    weights = str(tmp_path / "w.weights.h5")
    save_weights(network, weights)
    cmd = [sys.executable, "-m", "sknet_keras.hub", "--model=mini_sknet", f"--weights={weights}",
           f"--image_size={size}", "--normalization=caffe"]
    out = subprocess.run(cmd + [f"--output={tmp_path / 'preset'}"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "wrote the keras-hub preset" in out.stdout
    x = _images(6, size, seed=3)
    want = network.predict(preprocess_input(x.copy(), mode="caffe"), verbose=0)
    classifier = keras_hub.models.ImageClassifier.from_preset(str(tmp_path / "preset"))
    _assert_close(classifier.predict(x, verbose=0), want)
    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    assert sorted(backbone.pyramid_outputs) == ["P2", "P3", "P4", "P5"]
    with open(tmp_path / "preset" / "README.md") as f:  # the model card, ready to publish
        card = f.read()
    assert card.startswith("---\nlibrary_name: keras-hub\n") and "# mini_sknet" in card
    assert "the weights file w.weights.h5" in card and "| classes | 10 |" in card

    # A second run onto the same folder is refused and leaves it as it was.
    files = sorted(os.listdir(tmp_path / "preset"))
    # (As users run it, TF_CPP_MIN_LOG_LEVEL unset: the error is all it prints.)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    again = subprocess.run(cmd + [f"--output={tmp_path / 'preset'}"], capture_output=True,
                           text=True, timeout=600, env=env)
    assert again.returncode != 0
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 2 and "exists and is not an empty folder" in lines[0], lines
    assert sorted(os.listdir(tmp_path / "preset")) == files


def test_architecture_round_trips_through_json_for_every_family():
    import json

    from sknet_keras.models.serialization import config_to_dict
    from sknet_keras.registry import ENTRIES

    for name, entry in ENTRIES.items():
        config = entry.config
        data = json.loads(json.dumps(config_to_dict(config)))
        back = config_from_dict(type(config), data)
        assert back == config and hash(back) == hash(config), name
        assert dataclasses.asdict(back) == dataclasses.asdict(config)
