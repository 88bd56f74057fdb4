"""Every family trains alike on the JAX and PyTorch backends: same losses, same gradients.

The TensorFlow run here saves its weights before each of a few `fit` steps; a child process
with `KERAS_BACKEND` set loads them before the same step, on the same batch, with the same
SGD, and returns its losses, first-step gradients and BN moving statistics.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from sknet_keras.applications import build_model
from test_kernel_paths import FAMILY_NAMES, _assert_steps_equal, family_config

pytestmark = pytest.mark.large

STEPS, BATCH, SIZE, CLASSES = 3, 8, 64, 5

_CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
import conftest, keras, numpy as np
from test_backends import fit_steps
from test_kernel_paths import family_config
out = {{}}
for family in {families!r}:
    losses, grads, weights = fit_steps(family_config(family), {tmp!r} + "/" + family)
    prefix = {tmp!r} + "/" + family + "." + keras.backend.backend()
    np.savez(prefix + ".grads.npz", **grads)
    np.savez(prefix + ".weights.npz", **weights)
    out[family] = losses
print("LOSSES" + json.dumps(out))
"""


def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (STEPS * BATCH, SIZE, SIZE, 3)).astype("float32")
    return x, np.arange(STEPS * BATCH) % CLASSES


LEARNING_RATE = 0.01


def fit_steps(config, prefix, save=False):
    """The `fit` train step over STEPS batches (in order), each from TensorFlow's weights.

    TensorFlow (`save=True`) writes its weights before each step to `{prefix}.step{i}.weights.h5`;
    the other backends load them before the same step. So every step is compared from the
    same weights: run freely, float32 rounding makes the trajectories of these mini networks
    drift apart within three steps (seen: 10 % by the third loss, mini SK-ResNeXt, PyTorch).
    Returns each step's loss, the first step's gradients ((w0 - w1) / lr of plain SGD) and
    every weight after it (BN moving statistics included).
    """
    keras.utils.set_random_seed(0)
    model = build_model(config, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    model.compile(keras.optimizers.SGD(LEARNING_RATE), "sparse_categorical_crossentropy")
    x, y = data()
    losses, grads, weights = [], None, None
    for i in range(STEPS):
        path = f"{prefix}.step{i}.weights.h5"
        if save:
            model.save_weights(path)
        else:
            model.load_weights(path)
        start = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        batch = slice(i * BATCH, (i + 1) * BATCH)
        losses.append(float(model.train_on_batch(x[batch], y[batch])))
        if i == 0:
            grads = {w.path.replace("/", "|"): (w0 - keras.ops.convert_to_numpy(w))
                     / LEARNING_RATE for w0, w in zip(start, model.trainable_weights)}
            weights = {w.path.replace("/", "|"): keras.ops.convert_to_numpy(w)
                       for w in model.weights}
    return losses, grads, weights


# How far float32 rounding alone moves these gradients: on TensorFlow, multiplying the input
# by (1 + 1e-5·noise) changed mini ResNeXt's first-step gradients by 2.7 % (relative L2) and
# 3e-5 by 4.1 %; mini SK-ResNet's by 0.4–0.5 %. (Batch-of-8 BN over 2×2 maps, and pre-ReLU
# values within rounding of zero that change side.) The backends' forward activations agree
# to 1e-5, so their gradients may differ that much; a wrong gradient differs by O(1), and a
# wrong forward already fails the first loss (rtol 1e-5).
GRAD_RTOL = 0.1


@pytest.fixture(scope="module")
def tensorflow_steps(tmp_path_factory):
    """Every family's steps on TensorFlow, from weights saved for the other backends."""
    folder = tmp_path_factory.mktemp("tensorflow_steps")
    steps = {}
    for family in FAMILY_NAMES:
        keras.backend.clear_session()
        steps[family] = fit_steps(family_config(family), str(folder / family), save=True)
    return folder, steps


@pytest.mark.kernels
@pytest.mark.parametrize("backend,package", [("jax", "jax"), ("torch", "torch")])
def test_every_family_fits_alike_on_other_backends(backend, package, tensorflow_steps):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install -e '.[test]' installs it)")
    tmp_path, expected = tensorflow_steps
    code = _CHILD.format(tests=os.path.dirname(__file__), families=FAMILY_NAMES,
                         tmp=str(tmp_path))
    env = dict(os.environ, KERAS_BACKEND=backend)
    if backend == "jax":
        # XLA's compile of each family's train step is most of this test's time; without
        # LLVM's costly passes it compiles in 10 s instead of 17 (mini ResNeXt, measured).
        # The same HLO runs, with plainer machine code: the numbers checked are unchanged.
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_llvm_disable_expensive_passes"
                            "=true --xla_backend_optimization_level=0").strip()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("LOSSES")][-1]
    losses = json.loads(line[len("LOSSES"):])
    for family in FAMILY_NAMES:
        want_losses, want_grads, want_weights = expected[family]
        label = f"{family} on {backend}"
        # The first step: same loss, same gradients (float32 noise: see _assert_steps_equal).
        np.testing.assert_allclose(losses[family][0], want_losses[0], rtol=1e-5,
                                   err_msg=f"{label}: first loss")
        got_grads = dict(np.load(tmp_path / f"{family}.{backend}.grads.npz"))
        _assert_steps_equal((losses[family][0], got_grads, {}),
                            (want_losses[0], want_grads, {}), label, grad_rtol=GRAD_RTOL)
        # The BN moving statistics after the first step (unbiased variance on every backend).
        got = np.load(tmp_path / f"{family}.{backend}.weights.npz")
        assert sorted(got.files) == sorted(want_weights), family
        for path, want in want_weights.items():
            if "moving" not in path:
                continue  # trainable: checked through the gradients
            np.testing.assert_allclose(got[path], want, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{label}: {path} after the first step")
        # Every step from the same weights: the same loss.
        np.testing.assert_allclose(losses[family], want_losses, rtol=1e-5,
                                   err_msg=f"{label}: losses")


_JAX_PATHS_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import conftest, jax, jax.numpy as jnp, numpy as np
from sknet_keras.layers import GroupConv2D
from sknet_keras.layers.accel import conv_paths
from test_kernel_paths import CONVS, numpy_conv_and_grads
chosen_paths = {{}}
rng = np.random.default_rng(0)
choose = conv_paths.conv_path
for kernel, stride, dilation, groups, channels, size in CONVS:
    chosen = choose(groups, channels, (dilation, dilation), "float32", channels)
    chosen_paths[str((kernel, stride, dilation, groups, channels))] = chosen
    for path in ("keras", "split") + (("taps",) if groups == channels else ()):
        conv_paths.conv_path = lambda *args, path=path: path
        x = rng.standard_normal((2, size, size + 1, channels)).astype("float32")
        layer = GroupConv2D(channels, kernel, strides=stride, dilation_rate=dilation,
                            groups=groups)
        layer.build(x.shape)
        layer.kernel.assign(rng.standard_normal(layer.kernel.shape).astype("float32"))
        r = rng.standard_normal(layer.compute_output_shape(x.shape)).astype("float32")

        def loss(x, k):
            y, _ = layer.stateless_call([k], [], x)
            return jnp.sum(y * r), y

        # Eager (no jit): the same formulation, without a compile per case.
        (_, y), (gx, gk) = jax.value_and_grad(loss, (0, 1), has_aux=True)(
            x, layer.kernel.value)
        want = numpy_conv_and_grads(x, np.asarray(layer.kernel.value), r, stride, dilation,
                                    dilation * (kernel - 1) // 2, groups)
        for name, got, ref in zip(("output", "input gradient", "kernel gradient"),
                                  (y, gx, gk), want):
            np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-3,
                                       err_msg=f"{{(kernel, stride, dilation, groups)}} {{path}}: {{name}}")
print("CHOSEN", chosen_paths)
"""


def test_every_jax_conv_path_equals_numpy():
    """JAX on the CPU runs grouped convs per group and depthwise ones as taps (conv_paths'
    table): each formulation's output and gradients against NumPy's, for every conv shape."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install -e '.[test]' installs it)")
    code = _JAX_PATHS_CHILD.format(tests=os.path.dirname(__file__))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu"),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chosen = proc.stdout.split("CHOSEN", 1)[1]
    assert "'split'" in chosen and "'taps'" in chosen, chosen  # the CPU choices did run
