"""One meaning of `--weights` (`sknet_keras.trainers.model_source`): the same run, weights
file or release gives the same network, settings and outputs in evaluate, export, the hub
command and the attention analysis."""

import json

import keras
import numpy as np
import pytest

from commands import EVALUATE, run
from harness import _randomize
from sknet_keras import cli
from sknet_keras.applications import build_model
from sknet_keras.trainers import configs
from sknet_keras.trainers.model_source import resolve
from sknet_keras.weights.files import save_weights

SIZE, CLASSES = 32, 10


def _reference():
    """A mini SKNet of 10 classes whose weights and BN statistics make its logits differ per
    image (as a trained one's)."""
    keras.utils.set_random_seed(0)
    model = build_model("mini_sknet", input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                        classifier_activation=None)
    _randomize(model)
    return model


@pytest.fixture
def finished_run(tmp_path):
    """A run folder as a finished digits run leaves it: config.json and final.weights.h5."""
    folder = tmp_path / "run"
    folder.mkdir()
    config = configs.recipe("digits").override(name="mini_sknet", image_size=SIZE,
                                                normalization="caffe", crop_fraction=0.9)
    configs.write_config(config, str(folder))
    model = _reference()
    save_weights(model, str(folder / "final.weights.h5"))
    return folder, model


def _images(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")


def test_a_run_and_its_weights_file_are_one_source(finished_run):
    folder, reference = finished_run
    by_folder = resolve(weights=str(folder))
    by_file = resolve(weights=str(folder / "final.weights.h5"))
    for source in (by_folder, by_file):
        assert (source.model, source.classes, source.image_size, source.normalization,
                source.crop_fraction, source.weights, source.checkpoint) == (
            "mini_sknet", CLASSES, SIZE, "caffe", 0.9, str(folder / "final.weights.h5"), None)
        x = _images()
        np.testing.assert_array_equal(np.asarray(source.build()(x, training=False)),
                                      np.asarray(reference(x, training=False)))
    with pytest.raises(cli.UsageError, match=r"--model=sknet26: .* holds a run of mini_sknet"):
        resolve("sknet26", str(folder))


def test_keras_own_weights_file_is_read_as_the_model_named(tmp_path):
    reference = _reference()
    path = str(tmp_path / "plain.weights.h5")
    reference.save_weights(path)  # Keras' own: no record of its network
    with pytest.raises(cli.UsageError, match="does not name its network .*: give --model"):
        resolve(weights=path)
    source = resolve("mini_sknet", path, image_size=SIZE)
    assert (source.model, source.classes) == ("mini_sknet", CLASSES)
    x = _images()
    np.testing.assert_array_equal(np.asarray(source.build(classifier_activation=None)(x)),
                                  np.asarray(reference(x)))


def test_a_damaged_weights_file_is_the_first_problem_named(tmp_path):
    path = tmp_path / "broken.weights.h5"
    path.write_bytes(b"\x89HDF\r\n" + b"\0" * 100)
    with pytest.raises(cli.UsageError, match=r"--weights: .*broken.weights.h5 is not a readable "
                                             "weights file"):
        resolve(weights=str(path))


def test_releases_by_tag_and_by_imagenet():
    source = resolve(weights="resnext50.a1h_in1k")
    assert (source.model, source.crop_fraction, source.normalization) == ("resnext50", 0.95,
                                                                          "torch")
    assert resolve("senet154").interpolation == "bilinear"
    with pytest.raises(cli.UsageError, match="no public ImageNet weights exist for sknet26"):
        resolve("sknet26")


@pytest.mark.large
def test_every_command_reads_the_run_alike(finished_run, tmp_path):
    """evaluate (its own process), export's serving model, the hub preset and the analysis:
    the run's network and settings, the same outputs."""
    from sknet_keras import export
    from sknet_keras.analysis import loading

    folder, reference = finished_run
    x = _images(1)
    want = np.asarray(reference(_caffe(x), training=False))
    for weights in (str(folder), str(folder / "final.weights.h5")):
        source = export.resolve(weights=weights)
        served = np.asarray(export.serving_model(source)(x, training=False))
        np.testing.assert_allclose(served, want, rtol=1e-5, atol=1e-5)
        model, prep, loaded = loading.load(None, weights)
        assert (prep.image_size, prep.normalization, prep.crop_fraction, loaded) == (
            SIZE, "caffe", 0.9, str(folder / "final.weights.h5"))
        features = keras.Model(reference.inputs, reference.get_layer("conv5_block1_out").output)
        np.testing.assert_allclose(np.asarray(model(_caffe(x))), np.asarray(features(_caffe(x))),
                                   rtol=1e-5, atol=1e-5)
    results = []
    for flag in (f"--weights={folder}", f"--weights={folder / 'final.weights.h5'}"):
        out = tmp_path / f"eval{len(results)}.json"
        proc = run(EVALUATE + [flag, f"--output={out}"])
        assert "evaluating with the settings of the run" in proc.stdout, proc.stdout
        results.append(json.loads(out.read_text())[str(SIZE)]["top1"])
    assert results[0] == results[1]
    keras_hub = pytest.importorskip("keras_hub")
    from sknet_keras.hub.__main__ import write_preset

    preset = str(tmp_path / "preset")
    write_preset(export.resolve(weights=str(folder)), preset)
    classifier = keras_hub.models.ImageClassifier.from_preset(preset)
    np.testing.assert_allclose(classifier.predict(x, verbose=0), want, rtol=1e-4,
                               atol=1e-4 * np.abs(want).max())


def _caffe(x):
    """BGR minus the ImageNet BGR mean (Keras' caffe mode), written out."""
    return x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)


@pytest.mark.large
def test_a_release_by_tag_reads_alike_in_export_hub_and_the_analysis(tmp_path, monkeypatch):
    """`--weights=skresnet18.ra_in1k` (a release, here served on 127.0.0.1): the export's
    serving model, the hub preset and the analysis all hold build_model's weights of it,
    with the release's preprocessing."""
    import hashlib

    from sknet_keras import export, presets
    from sknet_keras.analysis import loading
    from sknet_keras.convert.timm import keras_to_timm
    from test_weights import Server
    from pth_writer import write_pth

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKNET_KERAS_WEIGHTS_DIR", raising=False)
    keras.utils.set_random_seed(3)
    release_model = build_model("skresnet18", input_shape=(64, 64, 3),
                                classifier_activation=None)
    _randomize(release_model)
    payload_path = write_pth(str(tmp_path / "release.pth"),
                             keras_to_timm(release_model, "skresnet18"), legacy=True)
    payload = open(payload_path, "rb").read()
    server = Server(payload)
    key = "skresnet18.ra_in1k"
    monkeypatch.setitem(presets.PRESETS, key, presets.Preset(**{
        **presets.PRESETS[key].__dict__, "url": server.url,
        "sha256": hashlib.sha256(payload).hexdigest()[:8]}))
    source = export.resolve(weights=key, image_size=64)
    assert (source.model, source.classes, source.normalization) == ("skresnet18", 1000, "torch")
    x = export.check_images(64, 4, seed=2)  # RGB in [0, 255]
    normalized = (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    want = np.asarray(release_model(normalized.astype("float32"), training=False))
    try:
        logits = np.asarray(export.serving_model(source)(x, training=False))  # downloads
    finally:
        server.close()  # converted and cached: read from the cache from here on
    np.testing.assert_allclose(logits, want, rtol=0, atol=1e-4 * np.abs(want).max())
    assert np.abs(want[0] - want[1]).max() > 1e-2 * np.abs(want).max()  # images differ
    model, prep, loaded = loading.load(None, key, image_size=64)
    assert (loaded, prep.normalization, prep.interpolation) == (key, "torch", "bicubic")
    features = keras.Model(release_model.inputs, release_model.get_layer("conv5_block2_out").output)
    got, ref = (np.asarray(m(normalized.astype("float32"))) for m in (model, features))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    keras_hub = pytest.importorskip("keras_hub")
    from sknet_keras.hub.__main__ import write_preset

    write_preset(source, str(tmp_path / "preset"))
    classifier = keras_hub.models.ImageClassifier.from_preset(str(tmp_path / "preset"))
    np.testing.assert_allclose(classifier.predict(x, verbose=0), logits, rtol=1e-4,
                               atol=1e-4 * np.abs(logits).max())
