"""`applications.feature_model`: stage outputs at strides 4-32 for every family, each a true
stage boundary of the full network (the rest of the network runs from it alone)."""

import warnings

import keras
import numpy as np
import pytest

from harness import _randomize
from sknet_keras.applications import build_model, feature_model, pyramid_taps
from test_kernel_paths import FAMILY_NAMES, family_config

SIZE = 64


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_pyramid_levels_are_stage_boundaries_at_their_strides(family):
    config = family_config(family)
    keras.utils.set_random_seed(0)
    model = build_model(config, input_shape=(SIZE, SIZE, 3), classes=7,
                        classifier_activation=None)
    _randomize(model)
    for w in model.get_layer("predictions").weights:  # the image, not the bias, decides
        w.assign(np.random.default_rng(1).normal(0, 0.3 if w.ndim > 1 else 0, w.shape))
    features = feature_model(model, levels=[l for l in pyramid_taps(config) if l >= 2],
                             config=config)  # shares the model's layers
    rng = np.random.default_rng(0)
    x = (rng.uniform(-1, 1, (4, SIZE, SIZE, 3)) * rng.uniform(0.2, 1.5, (4, 1, 1, 1))
         + rng.uniform(-1, 1, (4, 1, 1, 3))).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. Keras' input-structure warning
        got = {k: np.asarray(v) for k, v in features(x, training=False).items()}
    levels = [level for level in pyramid_taps(config) if level >= 2]
    assert sorted(got) == [f"P{level}" for level in levels]  # mini ShuffleNets: P2-P4
    logits = np.asarray(model(x, training=False))
    for level in levels:
        tap = model.get_layer(pyramid_taps(config)[level]).output
        assert got[f"P{level}"].shape[1:3] == (SIZE >> level,) * 2, (family, level)
        # A stage output is a cut of the graph: the logits follow from it alone (Keras
        # refuses a model whose outputs need another input), and they are the model's.
        rest = keras.Model(tap, model.output)
        np.testing.assert_allclose(np.asarray(rest(got[f"P{level}"], training=False)), logits,
                                   rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    assert np.std(logits, axis=0).mean() > 1e-2 * np.abs(logits).max()  # image-dependent
    channels = (config.out_channels if hasattr(config, "out_channels")
                else getattr(config, "widths", None))
    if channels is not None and family.startswith(("sk_", "resnext", "se_res", "senet")):
        assert [got[f"P{i}"].shape[-1] for i in (2, 3, 4, 5)] == list(channels)
    if family.startswith("shufflenet"):  # P2: the stem pool; P3, P4: the stages; P5: conv5
        assert [got[f"P{i}"].shape[-1] for i in levels] == [
            config.stem_width, *config.widths[:-1], config.head_width]


@pytest.mark.large
@pytest.mark.parametrize("name", ["sknet50", "senet154", "se_bn_inception",
                                  "shufflenet_v2_x1_0_sk", "skresnet18"])
def test_every_imagenet_layout_has_p1_to_p5_at_its_strides(name):
    features = feature_model(name, levels=(1, 2, 3, 4, 5), input_shape=(224, 224, 3))
    assert {k: v.shape[1] for k, v in features.output.items()} == {
        f"P{level}": 224 >> level for level in range(1, 6)}


def test_feature_model_by_name_and_its_errors():
    features = feature_model("sknet26", levels=(3, 5), input_shape=(None, None, 3))
    assert {k: tuple(v.shape) for k, v in features.output.items()} == {
        "P3": (None, None, None, 512), "P5": (None, None, None, 2048)}
    with pytest.raises(ValueError, match=r"pyramid levels \[1, 2, 3, 4, 5\].*levels=\(6,\)"):
        feature_model("sknet50", levels=(6,))
    with pytest.raises(ValueError, match="levels 0, 1, 2|pyramid levels \\[0, 1, 2\\]"):
        feature_model("sknet29")  # a CIFAR network: no downsampling stem
    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)], name="mine")
    with pytest.raises(ValueError, match="'mine' is not a registry name"):
        feature_model(other)
    with pytest.raises(ValueError, match=r"build arguments \['weights'\]"):
        feature_model(features, weights="imagenet")
