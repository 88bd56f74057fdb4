"""Every convolution formulation, under whichever CPU kernels this process has, trains right.

TensorFlow's CPU kernels are oneDNN or Eigen, fixed at import (`kernel_support`); CI runs this
file under each (`TF_ENABLE_ONEDNN_OPTS=0`, `=1 ONEDNN_MAX_CPU_ISA=AVX2`, the machine's
default). References are independent of TensorFlow's convolution kernels: NumPy for a layer,
and for a whole network a convolution written as shifted slices and matrix products, whose
gradients TensorFlow derives from slicing and matmul alone.
"""

import contextlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import MINI_SKRESNEXT
from sknet_keras.applications import build_model
from sknet_keras.layers import GroupConv2D, PointwiseConv2D
from sknet_keras.layers.accel import conv_paths, kernel_support, onednn_kernels, trace_scope
from sknet_keras.registry import MODELS

pytestmark = pytest.mark.kernels


# --- one layer against NumPy -----------------------------------------------------------------

def numpy_conv_and_grads(x, w, r, stride, dilation, pad, groups):
    """y = conv(x, w) and the gradients of sum(y * r) by the definition (float64)."""
    x, w, r = (a.astype(np.float64) for a in (x, w, r))
    n, h, wd, _ = x.shape
    kh, kw, cg, out = w.shape
    og = out // groups
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    y = np.zeros((n, ho, wo, out))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for g in range(groups):
        cin, cout = slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og)
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dilation, i * dilation + stride * (ho - 1) + 1, stride)
                cols = slice(j * dilation, j * dilation + stride * (wo - 1) + 1, stride)
                patch = xp[:, rows, cols, cin]
                y[..., cout] += patch @ w[i, j, :, cout]
                dw[i, j, :, cout] += np.einsum("nhwi,nhwo->io", patch, r[..., cout])
                dxp[:, rows, cols, cin] += r[..., cout] @ w[i, j, :, cout].T
    return y, dxp[:, pad:pad + h, pad:pad + wd], dw


CHOOSE = conv_paths.conv_path  # the package's own choice (the test below replaces it)
# The kernel sets the package chooses formulations for (`conv_paths.conv_path`): TensorFlow's
# Eigen kernels without and with oneDNN's kernels callable directly, its oneDNN kernels, a GPU.
KERNEL_SETS = ((False, False, False), (False, False, True), (True, False, True),
               (False, True, True))  # (oneDNN kernels, GPU, oneDNN callable directly)


def paths_the_package_chooses(groups, in_channels, dilation, kernel=3):
    """Every formulation `conv_path` picks for this convolution under some kernel set, in
    training or inference: read from the package's own choice, not restated here; each is
    then run under this process's kernels and held to NumPy (one they cannot run is
    skipped, saying so; the one this process itself picks must run: the test below)."""
    from unittest import mock

    found = []
    for onednn, gpu, direct in KERNEL_SETS:
        direct = direct and onednn_kernels.registered()
        with mock.patch.object(kernel_support, "onednn_enabled", lambda: onednn), \
                mock.patch.object(kernel_support, "gpu_available", lambda: gpu), \
                mock.patch.object(onednn_kernels, "usable", lambda dtype: direct):
            for training in (True, False):
                path = conv_paths.conv_path(groups, in_channels, (dilation, dilation), "float32",
                                            in_channels, (kernel, kernel), training)
                found += [path] if path not in found else []
    return found


CONVS = [  # kernel, stride, dilation, groups, in/out channels, size
    (3, 1, 1, 4, 16, 9),     # ResNeXt's grouped 3×3
    (3, 2, 1, 4, 16, 9),     # its strided first unit of a stage
    (3, 1, 2, 4, 16, 9),     # SK's dilated "5×5" branch
    (3, 2, 2, 8, 16, 10),    # strided and dilated: subsample first
    (3, 2, 3, 2, 16, 11),    # dilation not a multiple of the stride: subsample after
    (3, 2, 1, 16, 16, 9),    # depthwise, strided (ShuffleNetV2)
    (3, 1, 2, 16, 16, 8),    # depthwise, dilated (ShuffleNetV2 + SK)
    (3, 1, 2, 1, 8, 7),      # ungrouped, dilated (SK-ResNet's split-input branch)
    (5, 1, 1, 2, 32, 8),     # 16 channels per group: one group per block
    (3, 1, 2, 8, 32, 8),     # 4 channels per group: blocks of 4 groups, dilated
    (3, 2, 1, 6, 36, 9),     # 6 channels per group: 6 groups, blocks of 2 (16 // 6, a divisor)
    (1, 1, 1, 1, 16, 9),     # the ResNets' 1×1 convs (a matmul on the Eigen kernels)
    (1, 2, 1, 1, 16, 9),     # their strided shortcut
]


def _cases():
    for kernel, stride, dilation, groups, channels, size in CONVS:
        for path in paths_the_package_chooses(groups, channels, dilation, kernel):
            # Inference runs dilated convs natively, differentiated through space-to-batch.
            for training in (True, False) if dilation > 1 else (True,):
                yield pytest.param(
                    kernel, stride, dilation, groups, channels, size, path, training,
                    id=f"k{kernel}s{stride}d{dilation}g{groups}c{channels}-{path}"
                       + ("" if training else "-inference"))


@pytest.mark.parametrize("kernel,stride,dilation,groups,channels,size,path,training",
                         list(_cases()))
def test_conv_path_forward_and_gradients_equal_numpy(kernel, stride, dilation, groups,
                                                     channels, size, path, training, rng,
                                                     monkeypatch):
    monkeypatch.setattr(conv_paths, "conv_path", lambda *args: path)
    x = tf.constant(rng.standard_normal((2, size, size + 1, channels)).astype("float32"))
    layer = GroupConv2D(channels, kernel, strides=stride, dilation_rate=dilation,
                        groups=groups)
    layer.build(x.shape)
    layer.kernel.assign(rng.standard_normal(layer.kernel.shape).astype("float32"))
    r = rng.standard_normal(layer.compute_output_shape(x.shape)).astype("float32")

    @tf.function  # graph mode: the kernels (and Grappler) of a real training step
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * r)
        return (y,) + tuple(tape.gradient(loss, [x, layer.kernel]))

    try:
        got = [t.numpy() for t in step(x)]
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError,
            tf.errors.NotFoundError) as e:
        if path == CHOOSE(groups, channels, (dilation, dilation), "float32", channels,
                          (kernel, kernel), training):
            raise  # the formulation this process itself picks must run
        pytest.skip(f"{path}: TensorFlow's kernels here cannot run it ({type(e).__name__}); "
                    "the package picks it for another kernel set")
    want = numpy_conv_and_grads(x.numpy(), layer.kernel.numpy(), r, stride, dilation,
                                dilation * (kernel - 1) // 2, groups)
    for name, g, w in zip(("output", "input gradient", "kernel gradient"), got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-3, err_msg=f"{path}: {name}")


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("training", [True, False])
def test_pointwise_conv_forward_and_gradients_equal_numpy(stride, training, rng):
    """The ResNets' 1×1 convs: a matmul when training on the Eigen kernels, a conv otherwise."""
    x = tf.constant(rng.standard_normal((2, 9, 10, 16)).astype("float32"))
    layer = PointwiseConv2D(8, strides=stride, use_bias=False)
    layer.build(x.shape)
    layer.kernel.assign(rng.standard_normal(layer.kernel.shape).astype("float32"))
    r = rng.standard_normal(layer.compute_output_shape(x.shape)).astype("float32")

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * r)
        return tuple(tape.gradient(loss, [x, layer.kernel])) + (y,)

    dx, dw, y = (t.numpy() for t in step(x))
    want_y, want_dx, want_dw = numpy_conv_and_grads(x.numpy(), layer.kernel.numpy(), r, stride,
                                                    1, 0, 1)
    for name, g, w in (("output", y, want_y), ("input gradient", dx, want_dx),
                       ("kernel gradient", dw, want_dw)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-3, err_msg=name)
    path = conv_paths.conv_path(1, 16, (1, 1), "float32", 8, (1, 1), training)
    eigen = not (kernel_support.onednn_enabled() or kernel_support.gpu_available())
    assert path == ("matmul" if training and eigen else "native")


def test_blocks_hold_whole_groups_up_to_sixteen_input_channels():
    # (groups, channels per group) -> groups per block: as many as fit 16 channels, a divisor
    cases = {(32, 4): 4, (32, 8): 2, (32, 16): 1, (32, 32): 1, (64, 2): 8, (6, 6): 2,
             (3, 5): 3, (2, 4): 2, (5, 4): 1}
    got = {case: conv_paths.blocked_groups(*case) for case in cases}
    assert got == cases


def test_the_chosen_path_is_one_the_package_chooses_and_trains_right(rng):
    """Unpatched, each convolution runs the formulation this process picks, forward and
    gradients equal to NumPy."""
    for kernel, stride, dilation, groups, channels, size in CONVS:
        layer = GroupConv2D(channels, kernel, strides=stride, dilation_rate=dilation,
                            groups=groups)
        x = tf.constant(rng.standard_normal((2, size, size, channels)).astype("float32"))
        layer.build(x.shape)
        r = rng.standard_normal(layer.compute_output_shape(x.shape)).astype("float32")

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True) * r)
            return tape.gradient(loss, [x, layer.kernel])

        got = [t.numpy() for t in step(x)]
        want = numpy_conv_and_grads(x.numpy(), layer.kernel.numpy(), r, stride, dilation,
                                    dilation * (kernel - 1) // 2, groups)[1:]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-3,
                                       err_msg=f"k{kernel}s{stride}d{dilation}g{groups}")


# --- oneDNN's kernels called directly: the Eigen kernels' fast path -------------------------

needs_onednn_ops = pytest.mark.skipif(
    not onednn_kernels.registered(),
    reason="this TensorFlow build registers no oneDNN CPU kernels (only x86 builds do)")


def numpy_batch_norm_and_grads(x, gamma, beta, eps, r):
    """Training BN by its definition (float64): y, batch mean, unbiased batch variance, and
    the gradients of sum(y * r) in x, gamma and beta."""
    x, r = x.astype(np.float64), r.astype(np.float64)
    axes = (0, 1, 2)
    n = x.size // x.shape[-1]
    mean, var = x.mean(axes), x.var(axes)
    xhat = (x - mean) / np.sqrt(var + eps)
    dbeta, dgamma = r.sum(axes), (r * xhat).sum(axes)
    dx = gamma / np.sqrt(var + eps) * (r - dbeta / n - xhat * dgamma / n)
    return xhat * gamma + beta, mean, var * n / (n - 1), dx, dgamma, dbeta


@needs_onednn_ops
def test_onednn_batch_norm_training_equals_numpy(rng):
    x = tf.constant(rng.normal(2.0, 3.0, (4, 9, 7, 24)).astype("float32"))
    gamma = tf.constant(rng.uniform(0.5, 1.5, 24).astype("float32"))
    beta = tf.constant(rng.uniform(-1, 1, 24).astype("float32"))
    r = rng.standard_normal(x.shape).astype("float32")

    @tf.function
    def step(x, gamma, beta):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y, mean, variance = onednn_kernels.batch_norm_training(x, gamma, beta, 1e-3)
            loss = tf.reduce_sum(y * r)
        return (y, mean, variance) + tuple(tape.gradient(loss, [x, gamma, beta]))

    got = step(x, gamma, beta)
    want = numpy_batch_norm_and_grads(x.numpy(), gamma.numpy(), beta.numpy(), 1e-3, r)
    for name, g, w in zip(("y", "mean", "variance", "dx", "dgamma", "dbeta"), got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-4, err_msg=name)


@needs_onednn_ops
def test_onednn_kernels_run_only_in_graphs_that_stay_in_this_process(monkeypatch, tmp_path,
                                                                     rng):
    """On the Eigen kernels (as on an AVX2-only CPU), graphs traced by Keras' steps or inside
    `staying_in_tensorflow` call oneDNN's kernels directly and compute what the public ops
    compute; a user's own `tf.function`, XLA and every export get public ops only (other
    TensorFlow builds and the converters know no `_Mkl*` op)."""
    monkeypatch.setattr(kernel_support, "onednn_enabled", lambda: False)
    model = build_model(MINI_SKRESNEXT, input_shape=(32, 32, 3), classes=5,
                        classifier_activation=None)  # logits: no saturated softmax
    for w in model.weights:  # statistics and a classifier that make every image's logits its own
        if "moving_variance" in w.path or "gamma" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        elif "moving_mean" in w.path:
            w.assign(rng.uniform(-0.1, 0.1, w.shape))
        elif len(w.shape) == 2:
            w.assign(rng.normal(0, 1.0, w.shape))
    x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    made, real = [], onednn_kernels._op
    monkeypatch.setattr(onednn_kernels, "_op",
                        lambda op_type, *a, **k: made.append(op_type) or real(op_type, *a, **k))

    def direct_ops(run):
        made.clear()
        run()
        return set(made)

    def in_scope(t):
        with trace_scope.staying_in_tensorflow():
            return model(t, training=False)

    reference = model(x, training=False).numpy()  # eager: the public ops
    outputs = {}
    assert "_MklNativeConv2D" in direct_ops(
        lambda: outputs.setdefault("predict", model.predict(x, verbose=0)))
    assert "_MklNativeConv2D" in direct_ops(
        lambda: outputs.setdefault("scope", tf.function(in_scope)(x).numpy()))
    assert not direct_ops(lambda: outputs.setdefault(
        "xla", tf.function(in_scope, jit_compile=True)(x).numpy()))
    assert not direct_ops(lambda: outputs.setdefault(
        "own", tf.function(lambda t: model(t, training=False))(x).numpy()))
    scale = np.abs(reference).max()  # random weights: logits of any size, compared to it
    for name, y in outputs.items():
        np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
    assert np.abs(reference - reference[:1]).max() > 0.01 * scale  # each image its own logits

    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert {"_MklNativeConv2DBackpropFilter", "_MklNativeConv2DBackpropInput",
            "_MklNativeFusedBatchNormGradV3"} <= direct_ops(
        lambda: model.train_on_batch(x, np.arange(4) % 5))

    assert not direct_ops(lambda: model.export(str(tmp_path / "sm"), verbose=False))
    # and a SavedModel of the model after `fit` traced its steps holds none of them either
    tf.saved_model.save(model, str(tmp_path / "saved"))
    for path in ("sm", "saved"):
        with open(tmp_path / path / "saved_model.pb", "rb") as f:
            assert b"_MklNative" not in f.read(), path
    served = tf.saved_model.load(str(tmp_path / "sm"))
    served_logits = model(x, training=False).numpy()
    np.testing.assert_allclose(served.serve(x).numpy(), served_logits, rtol=1e-4,
                               atol=1e-5 * np.abs(served_logits).max())


@needs_onednn_ops
def test_the_trainer_trains_and_evaluates_on_the_direct_kernels_and_exports_without(
        monkeypatch, tmp_path, capsys):
    """On the Eigen kernels the trainer's own loops (not Keras' steps) call oneDNN's kernels
    directly; its SavedModel holds none of them."""
    from test_faults import config

    from sknet_keras.trainers.experiment import run_experiment

    monkeypatch.setattr(kernel_support, "onednn_enabled", lambda: False)
    made, real = [], onednn_kernels._op
    monkeypatch.setattr(onednn_kernels, "_op",
                        lambda op_type, *a, **k: made.append(op_type) or real(op_type, *a, **k))
    keras.backend.clear_session()
    result = run_experiment(config(max_steps=2, steps_per_epoch=2), "train", str(tmp_path),
                            exports=("weights", "saved_model"))
    assert result["step"] == 2 and result["val_examples"] == 360, result
    assert np.isfinite(result["train_loss_last_epoch"]), result
    assert {"_MklNativeConv2D", "_MklNativeConv2DBackpropFilter",
            "_MklNativeFusedBatchNormGradV3"} <= set(made)
    with open(tmp_path / "saved_model" / "saved_model.pb", "rb") as f:
        assert b"_MklNative" not in f.read()


# --- every family: a training step against convolutions made of slices and matmuls ---------

def sliced_conv(x, kernel, groups, strides, dilation, padding, kernel_size):
    """The convolution as Σ over taps of a shifted slice times the tap's kernel (per group)."""
    kh, kw = kernel_size
    dh, dw = dilation
    if padding == "SAME":  # GroupConv2D uses SAME only where it equals symmetric padding
        ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
        x = tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
    _, h, w, c = x.shape
    sh, sw = strides
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    cg, filters = kernel.shape[2], kernel.shape[3]
    k = tf.reshape(kernel, (kh, kw, cg, groups, filters // groups))
    n = tf.shape(x)[0]
    y = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                      j * dw: j * dw + sw * (wo - 1) + 1: sw, :]
            patch = tf.reshape(patch, tf.stack([n, ho, wo, groups, cg]))
            y += tf.einsum("nhwgi,igo->nhwgo", patch, k[i, j])
    return tf.reshape(y, tf.stack([n, ho, wo, filters]))


# Split attention (radix 2 in 2 cardinal groups), avd, average-pool shortcuts, deep stem.
MINI_RESNEST = MODELS["resnest50d"].replace(name="mini_resnest", depths=(1, 1, 1, 1),
                                            planes=(8, 16, 32, 64), stem_width=8,
                                            cardinality=2)


def _shufflenet(name):
    return MODELS[name].replace(name=f"mini_{name}", widths=(16, 32), repeats=(2, 1),
                                stem_width=8, head_width=64)


FAMILIES = {
    "sk_resnext": MINI_SKRESNEXT,
    "sk_resnet": MODELS["skresnet18"].replace(name="mini_skresnet", depths=(1, 1, 1, 1),
                                              widths=(16, 32, 64, 128),
                                              out_channels=(16, 32, 64, 128)),
    "resnext": MINI_SKRESNEXT.replace(name="mini_resnext", attention=None),
    "se_resnext": MINI_SKRESNEXT.replace(name="mini_seresnext", attention="se"),
    "se_resnet": MODELS["seresnet50"].replace(name="mini_seresnet", depths=(1, 1, 1, 1),
                                              widths=(8, 16, 32, 64),
                                              out_channels=(32, 64, 128, 256)),
    "senet154": MODELS["senet154"].replace(name="mini_senet154", depths=(1, 1, 1, 1),
                                           reduce_widths=(8, 16, 32, 64),
                                           widths=(16, 32, 64, 128),
                                           out_channels=(32, 64, 128, 256), groups=4,
                                           dropout=0.0),  # backends draw other masks
    "shufflenet_v2": _shufflenet("shufflenet_v2_x0_5"),
    "shufflenet_v2_sk": _shufflenet("shufflenet_v2_x0_5_sk"),
    "resnest": MINI_RESNEST,
}


def _se_bn_inception():
    from test_se_bn_inception import MINI

    return MINI


def family_config(name):
    return _se_bn_inception() if name == "se_bn_inception" else FAMILIES[name]


FAMILY_NAMES = sorted(FAMILIES) + ["se_bn_inception"]


def one_training_step(config, seed=0, in_process=False):
    """Gradients and weights after one SGD step on a batch of 4 (BN in training mode);
    `in_process`: traced inside `trace_scope.staying_in_tensorflow` (the trainer's case)."""
    keras.utils.set_random_seed(seed)
    model = build_model(config, input_shape=(32, 32, 3), classes=5)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 4], 5)
    optimizer = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.CategoricalCrossentropy()

    @tf.function
    def step():
        with tf.GradientTape() as tape, (trace_scope.staying_in_tensorflow() if in_process
                                         else contextlib.nullcontext()):
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss, grads

    loss, grads = step()
    return (float(loss), {v.path: g.numpy() for v, g in zip(model.trainable_variables, grads)},
            {v.path: v.numpy() for v in model.trainable_variables})


def _assert_steps_equal(got, want, label, grad_rtol=1e-2):
    """Equal within float32 noise. At initialization with a batch of 4, the BN backward
    amplifies rounding: two correct formulations differ by up to ~0.4 % of a variable's
    largest gradient in the first units. A wrong formulation differs by O(1).

    Float32 noise also moves a pre-ReLU value that lies within ~1e-6 of zero to the other
    side of the kink (seen: one value of 2e-6 at `conv4_block1_add`, TensorFlow vs PyTorch,
    whose forward activations agree to 1e-5 everywhere). That flips the gradient through one
    position, and with it a few elements of the variables upstream of it. So per variable at
    most 1 % of the elements (or 2) may lie beyond the tolerance; a wrong formulation
    disturbs most of them, and the global relative L2 stays bounded.

    `grad_rtol` bounds the global relative L2 and, ×2, each element's difference relative to
    its variable's largest gradient. Across backends the rounding differs in every layer,
    not in one, and the bound is wider (see tests/test_backends.py).
    """
    (loss, grads, weights), (ref_loss, ref_grads, ref_weights) = got, want
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-4, err_msg=label)
    assert grads.keys() == ref_grads.keys()
    flat = np.concatenate([grads[p].ravel() for p in ref_grads])
    ref_flat = np.concatenate([ref_grads[p].ravel() for p in ref_grads])
    rel = np.linalg.norm(flat - ref_flat) / np.linalg.norm(ref_flat)
    assert rel < grad_rtol, f"{label}: gradients differ by {rel:.2e} (relative L2)"
    for path in ref_grads:
        scale = max(np.abs(ref_grads[path]).max(), 1e-3)
        off = np.abs(grads[path] - ref_grads[path]) / scale > 2 * grad_rtol
        assert off.sum() <= max(2, 0.01 * off.size), (
            f"{label}: gradient of {path}: {off.sum()} of {off.size} elements differ by more "
            f"than {2 * grad_rtol:.0%} of its largest ({np.abs(grads[path] - ref_grads[path]).max() / scale:.2e})")
    for path in ref_weights:
        scale = max(np.abs(ref_grads[path]).max(), 1e-3)
        # The SGD step moved each weight by 0.1 × its gradient: the same tolerance, scaled.
        np.testing.assert_allclose(weights[path], ref_weights[path], rtol=1e-5,
                                   atol=0.1 * 2e-2 * scale,
                                   err_msg=f"{label}: weight {path} after the step")


@pytest.mark.large
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_training_step_equals_sliced_convolutions(family, monkeypatch):
    config = family_config(family)
    got = one_training_step(config)
    assert np.isfinite(got[0])
    keras.backend.clear_session()
    real = conv_paths.tf_conv

    def reference(path, x, kernel, groups, strides, dilation, padding, kernel_size,
                  training=True):
        return sliced_conv(x, kernel, groups, strides, dilation, padding, kernel_size)

    monkeypatch.setattr(conv_paths, "tf_conv", reference)
    want = one_training_step(config)
    monkeypatch.setattr(conv_paths, "tf_conv", real)
    _assert_steps_equal(got, want, family)


@pytest.mark.parametrize("family", ["resnext", "shufflenet_v2", "sk_resnext"])
def test_family_fit_and_predict_in_a_users_script(family):
    """`model.fit` and `predict_on_batch` (Grappler's fused conv + BN at inference)."""
    model = build_model(family_config(family), input_shape=(32, 32, 3), classes=5)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    y = np.arange(8) % 5
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert np.isfinite(model.predict_on_batch(x)).all()


# --- across processes: the same step under Eigen and under oneDNN ---------------------------

KERNEL_SETS = {
    "eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "onednn_avx2": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}

_CHILD = """
import sys, pickle
sys.path.insert(0, {tests!r})
import conftest
from test_kernel_paths import family_config, one_training_step, FAMILY_NAMES
from sknet_keras.layers.accel import kernel_support, onednn_kernels
made, real = set(), onednn_kernels._op
onednn_kernels._op = lambda op_type, *a, **k: made.add(op_type) or real(op_type, *a, **k)
out = {{"onednn": kernel_support.onednn_enabled(),
        "steps": {{f: one_training_step(family_config(f)) for f in FAMILY_NAMES}},
        "in_process": {{f: one_training_step(family_config(f), in_process=True)
                       for f in FAMILY_NAMES}},
        "direct_ops": made}}
with open({path!r}, "wb") as f:
    pickle.dump(out, f)
"""


@pytest.mark.large
@pytest.mark.cross_kernels
def test_every_family_steps_alike_under_eigen_and_onednn(tmp_path):
    """One process per kernel set; every family's training step must agree between them."""
    import pickle

    results = {}
    for label, env_vars in KERNEL_SETS.items():
        path = tmp_path / f"{label}.pkl"
        env = {**os.environ, **env_vars, "ONEDNN_MAX_CPU_ISA": env_vars.get(
            "ONEDNN_MAX_CPU_ISA", os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL"))}
        code = _CHILD.format(tests=os.path.dirname(__file__), path=str(path))
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(path, "rb") as f:
            results[label] = pickle.load(f)
    assert results["eigen"]["onednn"] is False and results["onednn_avx2"]["onednn"] is True
    # The trainer's steps on Eigen call oneDNN's kernels directly (where TensorFlow has them).
    assert ({"_MklNativeConv2DBackpropFilter", "_MklNativeFusedBatchNormGradV3"}
            <= results["eigen"]["direct_ops"]) == onednn_kernels.registered()
    assert not results["onednn_avx2"]["direct_ops"]
    for family in FAMILY_NAMES:
        want = results["onednn_avx2"]["steps"][family]
        _assert_steps_equal(results["eigen"]["steps"][family], want, family)
        _assert_steps_equal(results["eigen"]["in_process"][family], want, f"{family}, in process")
        _assert_steps_equal(results["onednn_avx2"]["in_process"][family], want,
                            f"{family}, oneDNN in process")


# --- inference: BatchNorm after a convolution -------------------------------------------------

@pytest.mark.parametrize("batch", [1, 2, None])
def test_inference_batchnorm_equals_its_formula_and_is_folded_only_where_cheap(batch, rng):
    """Inference BN is (x - mean) / sqrt(var + eps) · gamma + beta under every kernel set.
    FusedBatchNormV3 (which Grappler folds into the convolution) is emitted except with oneDNN
    on the CPU at batch 1 or an unknown batch, where the folded convolutions made SKNet-50's
    inference ~10× slower (batch_norm._fold_costs_per_call)."""
    from sknet_keras.layers import BatchNorm

    conv, bn = GroupConv2D(16, 3, groups=4), BatchNorm(epsilon=1e-3)
    x = tf.constant(rng.standard_normal((batch or 3, 9, 9, 16)).astype("float32"))
    conv.build(x.shape)
    bn.build((None, 9, 9, 16))
    for var in (bn.gamma, bn.beta, bn.moving_mean):
        var.assign(rng.uniform(-1, 1, 16).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 16).astype("float32"))

    infer = tf.function(lambda x: bn(conv(x), training=False),
                        input_signature=[tf.TensorSpec((batch, 9, 9, 16), tf.float32)])
    y = conv(x).numpy()
    want = ((y - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + 1e-3)
            * bn.gamma.numpy() + bn.beta.numpy())
    np.testing.assert_allclose(infer(x).numpy(), want, rtol=1e-5, atol=1e-5)
    ops = {op.type for op in infer.get_concrete_function().graph.get_operations()}
    onednn_cpu = kernel_support.onednn_enabled() and not kernel_support.gpu_available()
    folded_here = not (onednn_cpu and batch in (1, None))
    assert ("FusedBatchNormV3" in ops) == folded_here, sorted(ops)
