"""Keras' own `model.export` gives the Keras model's outputs in every format, every family.

Weights and BatchNorm statistics are randomized so that the logits differ from image to
image: at their initial values every logit is ~1e-5 and a broken export still "agrees".
The SK layers' fused inference path (an XLA function) made LiteRT files with wrong logits
and ONNX files that onnxruntime refused; exports now trace the plain ops (sk_paths).
"""

import importlib.util
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import _randomize
from sknet_keras.applications import build_model
from test_kernel_paths import FAMILY_NAMES, family_config

pytestmark = pytest.mark.large

SIZE, BATCH, CLASSES = 32, 8, 10
# The converters and runtimes beside TensorFlow (the `[export]` extra).
EXPORT_PACKAGES = ("ai_edge_litert", "onnxruntime", "tf2onnx")


def _serve(fmt):
    """The runtime of each file (the export command's), by Keras' format name."""
    from sknet_keras import export

    return lambda path, x: export.serve(path, fmt.removeprefix("tf_"), x)


SERVE = {fmt: _serve(fmt) for fmt in ("litert", "onnx", "tf_saved_model")}
SUFFIX = {"litert": ".tflite", "onnx": ".onnx", "tf_saved_model": ""}


# CI exports SK-ResNeXt, ShuffleNetV2-SK, SE-BN-Inception and ResNeSt (SK, grouped, channel
# shuffle, SE, Caffe pooling, concatenation, split attention, average pools); the others
# repeat those layers.
@pytest.mark.parametrize("family", [
    f if f in ("sk_resnext", "shufflenet_v2_sk", "se_bn_inception", "resnest")
    else pytest.param(f, marks=pytest.mark.exhaustive) for f in FAMILY_NAMES])
def test_every_format_serves_the_keras_logits(family, tmp_path):
    missing = [m for m in EXPORT_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[test]' installs them)")
    keras.utils.set_random_seed(0)
    model = build_model(family_config(family), input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                        classifier_activation=None)
    _randomize(model)
    for w in model.get_layer("predictions").weights:  # the image, not the bias, decides
        w.assign(np.random.default_rng(1).normal(0, 0.3 if w.ndim > 1 else 0, w.shape))
    rng = np.random.default_rng(0)
    x = (rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)) * rng.uniform(0.2, 1.5, (BATCH, 1, 1, 1))
         + rng.uniform(-1, 1, (BATCH, 1, 1, 3))).astype("float32")
    want = keras.ops.convert_to_numpy(model(x, training=False))
    scale = np.abs(want).max()
    # Logits that differ from image to image by far more than the tolerance below (measured
    # 6-24 % of the largest logit), or agreement would prove nothing.
    assert np.std(want, axis=0).mean() > 3e-2 * scale, family
    for fmt, serve in SERVE.items():
        path = str(tmp_path / f"{family}{SUFFIX[fmt]}")
        model.export(path, format=fmt, verbose=False)
        got = serve(path, x)
        assert got.shape == want.shape, (fmt, got.shape)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale,
                                   err_msg=f"{family} as {fmt}")
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1), err_msg=f"{family} {fmt}")
    # The SavedModel holds every variable (BN moving statistics included).
    assert len(tf.saved_model.load(str(tmp_path / family)).variables) == len(model.weights)


def test_the_trainers_exports_serve_the_runs_logits(tmp_path):
    """`--export=weights,litert,onnx,saved_model` of a trained run: the SavedModel is the
    network (normalized images in), and gives the logits of the run's weights (loaded from
    final.weights.h5 into a float32 model); the LiteRT and ONNX files are the export
    command's own (RGB images in [0, 255], the run's preprocessing in the graph), serving what the
    files of `python -m sknet_keras.export --weights=RUN` serve."""
    missing = [m for m in EXPORT_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[test]' installs them)")
    from sknet_keras.trainers.experiment import run_experiment
    from test_faults import config

    keras.backend.clear_session()
    formats = ("weights", "litert", "onnx", "saved_model")
    result = run_experiment(config(learning_rate=0.5), "train", str(tmp_path), exports=formats)
    assert sorted(result["exports"]) == ["final.onnx", "final.tflite", "final.weights.h5",
                                         "saved_model"]
    from sknet_keras import export

    source = export.resolve(weights=str(tmp_path))  # `python -m sknet_keras.export` of a run
    assert (source.model, source.classes, source.size, source.weights) == (
        "mini_sknet", CLASSES, SIZE, str(tmp_path / "final.weights.h5"))
    from sknet_keras import cli

    with pytest.raises(cli.UsageError, match=r"--model=sknet26: .* holds a run of mini_sknet"):
        export.resolve("sknet26", str(tmp_path))
    with pytest.raises(cli.UsageError, match=r"weights file not found: .*nope.* \(expected "
                       r"'imagenet', 'architecture.tag', a weights file or a training run's "
                       r"folder\)"):
        export.resolve(weights=str(tmp_path / "nope"))
    # final.weights.h5 is Keras' own format: Keras' loader reads it as `weights=` does.
    plain = build_model("mini_sknet", input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                        weights=None, classifier_activation=None)
    plain.load_weights(str(tmp_path / "final.weights.h5"))
    model = build_model("mini_sknet", input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                        weights=str(tmp_path / "final.weights.h5"), classifier_activation=None)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (BATCH, SIZE, SIZE, 3)).astype("float32")
    want = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(plain(x, training=False)), want)
    scale = np.abs(want).max()
    assert np.std(want, axis=0).mean() > 3e-2 * scale  # trained: logits differ per image
    got = SERVE["tf_saved_model"](str(tmp_path / "saved_model"), x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    images = export.check_images(SIZE, BATCH, seed=4)  # RGB in [0, 255]
    normalized = (images / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224,
                                                                               0.225])
    want = keras.ops.convert_to_numpy(model(normalized.astype("float32"), training=False))
    scale = np.abs(want).max()
    for fmt, name in (("litert", "final.tflite"), ("onnx", "final.onnx")):
        got = SERVE[fmt](str(tmp_path / name), images)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=fmt)
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1), err_msg=fmt)
        command = export.export(source, fmt, str(tmp_path / "by_command"))
        np.testing.assert_array_equal(SERVE[fmt](command["path"], images), got,
                                      err_msg=f"{fmt}: the trainer's file is not the command's")


def _trained_like_weights(path):
    """A mini SKNet whose weights and BN statistics make its logits differ per image."""
    keras.utils.set_random_seed(0)
    model = build_model("mini_sknet", input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                        classifier_activation=None)
    _randomize(model)
    for w in model.get_layer("predictions").weights:
        w.assign(np.random.default_rng(1).normal(0, 0.3 if w.ndim > 1 else 0, w.shape))
    from sknet_keras.weights.files import save_weights

    save_weights(model, path)
    return model


def test_export_command_files_serve_images_with_the_weights_preprocessing(tmp_path,
                                                                         monkeypatch):
    """`python -m sknet_keras.export`'s writer: the files take images in [0, 255] and give the
    logits of the network on torch-normalized images (mean / std computed here, not by the
    package); int8 quantization keeps top-1 on calibration-like images; a file whose outputs
    differ from Keras' is refused and not left on disk."""
    missing = [m for m in EXPORT_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[test]' installs them)")
    from PIL import Image

    from sknet_keras import cli, export

    network = _trained_like_weights(str(tmp_path / "w.weights.h5"))
    source = export.resolve("mini_sknet", str(tmp_path / "w.weights.h5"), SIZE)
    assert (source.classes, source.normalization) == (CLASSES, "torch")
    images = export.check_images(SIZE, 8, seed=3)
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    want = np.asarray(network(((images - mean) / std).astype("float32"), training=False))
    assert np.std(want, axis=0).mean() > 3e-2 * np.abs(want).max()
    for fmt in ("litert", "saved_model"):
        report = export.export(source, fmt, str(tmp_path / "out" / "mini"))
        got = export.serve(report["path"], fmt, images)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                   err_msg=fmt)
    calibration_dir = tmp_path / "calibration"
    calibration_dir.mkdir()
    for i, image in enumerate(export.check_images(48, 24, seed=5)):
        Image.fromarray(image.astype("uint8")).save(calibration_dir / f"{i}.png")
    calibration = export.read_images(str(calibration_dir), SIZE, 64)
    assert calibration.shape == (24, SIZE, SIZE, 3)
    float_size = os.path.getsize(tmp_path / "out" / "mini.tflite")
    report = export.export(source, "litert", str(tmp_path / "out" / "mini_int8"),
                           quantize="int8", calibration=calibration, min_agreement=0.75)
    assert report["bytes"] < 0.5 * float_size, report  # int8 weights: under half the bytes
    got = export.serve(report["path"], "litert", images)  # other images than calibration's
    agreement = np.mean(got.argmax(-1) == want.argmax(-1))
    print(f"int8 top-1 agreement {agreement:.0%}, {report['bytes']} / {float_size} bytes")
    assert agreement >= 0.75
    with pytest.raises(cli.UsageError, match="int8 needs --calibration_data"):
        export.export(source, "litert", str(tmp_path / "x"), quantize="int8")
    with pytest.raises(cli.UsageError, match="the validation split is a training run's"):
        export.validation_images(source)  # --calibration_data=validation of a weights file
    from sknet_keras.trainers import serving

    real_serve = serving.serve
    monkeypatch.setattr(serving, "serve", lambda *a: real_serve(*a) + 0.01)
    with pytest.raises(ValueError, match="does not give Keras' outputs.*not written"):
        export.export(source, "saved_model", str(tmp_path / "bad"))
    assert sorted(os.listdir(tmp_path)) == ["calibration", "out", "w.weights.h5"]
