"""The lean install: `pip install sknet-keras` (no extra) builds, trains, saves and loads
every part below the trainer, and each part that needs an extra says which one in one line."""

import os
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every package an extra installs, as imported. Listed here, apart from the package's own
# table (sknet_keras/extras.py), so that a part that starts to import one of them at a
# level below the trainer fails this test.
EXTRA_MODULES = ("tensorflow_datasets", "sklearn", "keras_cv", "tensorboard", "matplotlib",
                 "ai_edge_litert", "onnxruntime", "tf2onnx", "onnx", "keras_hub",
                 "importlib_resources")

BLOCKER = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRA_MODULES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Absent())
"""


def _run(code, tmp_path, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    return subprocess.run([sys.executable, "-c", BLOCKER + code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_core_dependencies_hold_no_extra():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    core = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]}
    assert core == {"tensorflow", "keras", "absl-py", "numpy", "h5py", "safetensors"}
    extras = project["optional-dependencies"]
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) == {
        "train", "analysis", "export", "hub"}


@pytest.mark.large  # a TensorFlow subprocess
def test_models_train_and_save_without_any_extra(tmp_path):
    proc = _run("""
import numpy as np, keras
from sknet_keras.applications import build_model, SKNet50, preprocess_input
from sknet_keras.weights import load_weights
model = build_model("mini_sknet", input_shape=(32, 32, 3), classes=3, weights=None)
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
before = [w.copy() for w in model.get_weights()]
model.fit(preprocess_input(x), np.array([0, 1, 2, 0]), epochs=1, verbose=0)
assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
model.save_weights("m.weights.h5")
again = build_model("mini_sknet", input_shape=(32, 32, 3), classes=3, weights=None)
again.load_weights("m.weights.h5")
np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
SKNet50(weights=None, input_shape=(64, 64, 3), classes=2)
print("trained and reloaded")
""", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained and reloaded" in proc.stdout


@pytest.mark.large  # TensorFlow subprocesses
@pytest.mark.parametrize("command, extra", [
    ("import runpy, sys; sys.argv = ['train', '--epochs=1'];"
     " runpy.run_module('sknet_keras.trainers.train', run_name='__main__')", "train"),
    ("import sknet_keras.hub", "hub"),
    ("import sknet_keras.analysis.figures", "analysis"),
])
def test_a_part_without_its_extra_names_the_extra(tmp_path, command, extra):
    proc = _run(command, tmp_path)
    assert proc.returncode != 0
    assert f'pip install "sknet-keras[{extra}]"' in proc.stderr, proc.stderr[-3000:]
    if extra == "train":  # a command: one line (and the --helpfull hint), no traceback
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        last = proc.stderr.strip().splitlines()[-2:]
        assert last[0].endswith("error: the bundled digits dataset needs scikit-learn, which is "
                                "not installed: pip install \"sknet-keras[train]\""), last
        assert last[1] == "(run with --helpfull for the flags)"
