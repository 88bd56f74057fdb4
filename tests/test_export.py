"""Keras' own `model.export` gives the Keras model's outputs in every format, every family.

Weights and BatchNorm statistics are randomized so that the logits differ from image to
image: at their initial values every logit is ~1e-5 and a broken export still "agrees".
The SK layers' fused inference path (an XLA function) made LiteRT files with wrong logits
and ONNX files that onnxruntime refused; exports now trace the plain ops (sk_paths).
"""

import importlib.util

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


def _serve_litert(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=2)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _serve_onnx(path, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _serve_saved_model(path, x):
    served = tf.saved_model.load(path)  # kept alive while its function runs
    return served.serve(tf.constant(x)).numpy()


SERVE = {"litert": _serve_litert, "onnx": _serve_onnx, "tf_saved_model": _serve_saved_model}
SUFFIX = {"litert": ".tflite", "onnx": ".onnx", "tf_saved_model": ""}


@pytest.mark.parametrize("family", FAMILY_NAMES)
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
    """`--export=weights,litert,onnx,saved_model`: each file of a trained run gives the logits
    of the run's weights (loaded from final.weights.h5 into a float32 model)."""
    missing = [m for m in EXPORT_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[test]' installs them)")
    from sknet_keras.trainers import train
    from test_faults import config

    keras.backend.clear_session()
    formats = ("weights", "litert", "onnx", "saved_model")
    result = train.train(config(learning_rate=0.5), str(tmp_path), export=formats)
    assert sorted(result["exports"]) == ["final.onnx", "final.tflite", "final.weights.h5",
                                         "saved_model"]
    model = build_model("mini_sknet", input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                        weights=str(tmp_path / "final.weights.h5"), classifier_activation=None)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (BATCH, SIZE, SIZE, 3)).astype("float32")
    want = keras.ops.convert_to_numpy(model(x, training=False))
    scale = np.abs(want).max()
    assert np.std(want, axis=0).mean() > 3e-2 * scale  # trained: logits differ per image
    for fmt, name in (("litert", "final.tflite"), ("onnx", "final.onnx"),
                      ("tf_saved_model", "saved_model")):
        got = SERVE[fmt](str(tmp_path / name), x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=fmt)
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1), err_msg=fmt)
