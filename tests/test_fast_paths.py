"""The speed paths compute the same function as the straightforward ones."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import MINI_SKRESNEXT
from sknet_keras.applications import build_model
from sknet_keras.layers import BatchNorm, SelectiveKernel
from sknet_keras.layers.group_conv import GroupConv2D
from sknet_keras.layers.selective_kernel import set_rematerialize


def _randomize(layer, rng):
    for w in layer.weights:
        if w.path.endswith("moving_variance") or w.path.endswith("gamma"):
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        else:
            w.assign(rng.normal(0, 0.3, w.shape))


def _pair(rng, **kwargs):
    fast = SelectiveKernel(32, groups=8, return_attention=True, min_attn_channels=8,
                           rematerialize=True, **kwargs)
    ref = SelectiveKernel(32, groups=8, return_attention=True, min_attn_channels=8,
                          implementation="reference", **kwargs)
    shape = (4, 9, 10, 32)
    fast.build(shape)
    ref.build(shape)
    _randomize(fast, rng)
    ref.set_weights(fast.get_weights())
    return fast, ref, tf.constant(rng.standard_normal(shape).astype("float32"))


def _forward_backward(layer, x, training, graph=False):
    """Outputs, gradients (input and weights) and BN moving statistics after one call."""
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            v, a = layer(x, training=training)
            loss = tf.reduce_sum(v * tf.sin(v)) + tf.reduce_sum(a * tf.cos(a))
        return v, a, tape.gradient(loss, [x] + [w.value for w in layer.trainable_weights])

    v, a, grads = (tf.function(step) if graph else step)(x)
    stats = [w.numpy() for w in layer.non_trainable_weights]
    return v.numpy(), a.numpy(), [g.numpy() for g in grads], stats


@pytest.mark.parametrize("strides,activation", [(1, "relu"), (2, "relu"), (2, None)])
def test_fused_inference_equals_reference_forward_and_gradients(strides, activation, rng):
    fast, ref, x = _pair(rng, strides=strides, branch_activation=activation)
    (v1, a1, g1, _), (v2, a2, g2, _) = (_forward_backward(layer, x, False)
                                        for layer in (fast, ref))
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a1, a2, rtol=1e-5, atol=1e-6)
    for p, q in zip(g1, g2):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-4)


def test_fused_inference_under_bfloat16_stays_close(rng):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    fast, ref, x = _pair(rng)
    v1, a1 = fast(x, training=False)
    v2, a2 = ref(x, training=False)
    assert v1.dtype == v2.dtype == tf.bfloat16 and a1.dtype == a2.dtype == tf.float32
    np.testing.assert_allclose(a1.numpy(), a2.numpy(), atol=2e-2)
    np.testing.assert_allclose(tf.cast(v1, "float32").numpy(), tf.cast(v2, "float32").numpy(),
                               rtol=5e-2, atol=5e-2)


def test_fused_batch_norm_matches_keras_batch_norm(rng):
    x = tf.constant(rng.normal(1.0, 2.0, (6, 5, 4, 8)).astype("float32"))
    ours = BatchNorm(momentum=0.9, epsilon=1e-5)
    theirs = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    for layer in (ours, theirs):
        layer.build(x.shape)
    _randomize(ours, rng)
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False),
                               rtol=1e-5, atol=1e-5)
    before_var = ours.moving_variance.numpy().copy()
    np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.moving_mean.numpy(), theirs.moving_mean.numpy(), rtol=1e-5)
    n = 6 * 5 * 4
    unbiased = x.numpy().reshape(-1, 8).var(0) * n / (n - 1)
    np.testing.assert_allclose(ours.moving_variance.numpy(),
                               0.9 * before_var + 0.1 * unbiased, rtol=1e-5)
    assert ours.get_config()["momentum"] == 0.9


def test_model_fast_paths_equal_reference_model(rng):
    fast = build_model(MINI_SKRESNEXT, input_shape=(40, 48, 3), classes=5)
    ref = keras.Model.from_config(fast.get_config())
    for layer in ref.layers:
        if isinstance(layer, SelectiveKernel):
            layer.implementation = "reference"
    for w in fast.weights:
        if "moving" in w.path or "gamma" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
    ref.set_weights(fast.get_weights())
    x = rng.random((3, 40, 48, 3), "float32")
    np.testing.assert_allclose(fast.predict(x, verbose=0), ref.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-6)


def test_fused_path_runs_only_where_the_graph_stays_in_tensorflow(monkeypatch, tmp_path):
    """Eager calls, `predict` and `trace_scope.staying_in_tensorflow` take the XLA-fused path; any
    other trace (exports, converters, a user's tf.function) gets plain ops, and the
    exported graph holds no XLA function."""
    from sknet_keras.layers.accel import sk_paths, trace_scope

    model = build_model(MINI_SKRESNEXT, input_shape=(32, 32, 3), classes=5)
    x = np.zeros((2, 32, 32, 3), "float32")
    calls = []
    real = sk_paths.fused_inference
    monkeypatch.setattr(sk_paths, "fused_inference",
                        lambda layer, inputs, f: calls.append(layer.name) or real(layer, inputs, f))
    sk_layers = sum(isinstance(layer, SelectiveKernel) for layer in model.layers)

    def fused_calls(run):
        calls.clear()
        run()
        return len(calls)

    assert fused_calls(lambda: model(x, training=False)) == sk_layers
    assert fused_calls(lambda: model.predict(x, verbose=0)) == sk_layers
    assert fused_calls(lambda: tf.function(lambda t: model(t, training=False))(x)) == 0

    def in_scope(t):
        with trace_scope.staying_in_tensorflow():
            return model(t, training=False)

    assert fused_calls(lambda: tf.function(in_scope)(x)) == sk_layers
    assert fused_calls(lambda: model.export(str(tmp_path / "sm"), verbose=False)) == 0
    served = tf.saved_model.load(str(tmp_path / "sm"))
    graph = served.serve.get_concrete_function(
        tf.TensorSpec((None, 32, 32, 3))).graph.as_graph_def()
    compiled = [f.signature.name for f in graph.library.function
                if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]
    assert not compiled, compiled[:3]


def test_group_conv_same_padding_path_equals_explicit_padding(rng):
    """The stride-1 "SAME" shortcut is the symmetric padding, also for dilation 2."""
    x = rng.standard_normal((2, 9, 8, 8)).astype("float32")
    same = GroupConv2D(8, 3, dilation_rate=2, groups=2)
    odd = GroupConv2D(8, 3, dilation_rate=2, groups=2, padding=3)  # not "same": explicit pad
    same.build(x.shape)
    odd.build(x.shape)
    odd.set_weights(same.get_weights())
    y_same, y_odd = same(x).numpy(), odd(x).numpy()
    assert y_same.shape == (2, 9, 8, 8) and y_odd.shape == (2, 11, 10, 8)
    np.testing.assert_allclose(y_same, y_odd[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strides,dilation", [(1, 2), (2, 1)])
def test_float16_grouped_dilated_conv_trains_on_cpu(strides, dilation, rng):
    """TF's CPU float16 conv backprop has no groups and no dilation; the layer still trains."""
    x = tf.constant(rng.standard_normal((2, 9, 9, 8)).astype("float16"))
    layer16 = GroupConv2D(8, 3, strides=strides, dilation_rate=dilation, groups=2,
                          dtype="mixed_float16")
    layer32 = GroupConv2D(8, 3, strides=strides, dilation_rate=dilation, groups=2)
    layer16.build(x.shape)
    layer32.build(x.shape)
    layer32.set_weights(layer16.get_weights())
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer16(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
    gx, gk = tape.gradient(loss, [x, layer16.kernel.value])
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(),
                               layer32(tf.cast(x, tf.float32)).numpy(), rtol=2e-2, atol=2e-2)
    assert np.all(np.isfinite(gx.numpy())) and np.all(np.isfinite(gk.numpy()))


@pytest.mark.parametrize("strides,graph", [(1, False), (2, False), (2, True)])
def test_rematerialized_training_equals_reference(strides, graph, rng):
    """Training path (BN batch stats, recomputed in the backward) = reference: forward,
    gradients and BN moving statistics (updated once, not again by the recomputation)."""
    fast, ref, x = _pair(rng, strides=strides)
    (v1, a1, g1, s1), (v2, a2, g2, s2) = (_forward_backward(layer, x, True, graph)
                                          for layer in (fast, ref))
    np.testing.assert_allclose(v1, v2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a1, a2, rtol=1e-4, atol=1e-5)
    for p, q in zip(g1, g2):
        np.testing.assert_allclose(p, q, rtol=1e-3, atol=1e-3)
    for p, q in zip(s1, s2):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.large
def test_rematerialized_model_trains_like_reference(rng):
    """`set_rematerialize` on a whole model: one `train_on_batch` (Keras' compiled train
    step, SGD momentum) gives the same loss, weights and BN moving statistics."""
    models = []
    for remat in (True, False):
        keras.utils.set_random_seed(3)
        model = build_model(MINI_SKRESNEXT, input_shape=(32, 40, 3), classes=5)
        assert set_rematerialize(model, remat) == 6  # one SK layer per block
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss="sparse_categorical_crossentropy")
        models.append(model)
    models[1].set_weights(models[0].get_weights())
    x = rng.random((4, 32, 40, 3), "float32")
    y = np.array([0, 1, 2, 4])
    losses = [[m.train_on_batch(x, y) for _ in range(2)] for m in models]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    for w1, w2 in zip(models[0].weights, models[1].weights):
        np.testing.assert_allclose(w1.numpy(), w2.numpy(), rtol=1e-3, atol=1e-4,
                                   err_msg=w1.path)


@pytest.mark.parametrize("size,channels,groups,dilation", [(32, 16, 4, 2), (56, 128, 32, 2),
                                                           (40, 64, 64, 3)])
def test_bfloat16_dilated_grouped_conv_trains_on_cpu(size, channels, groups, dilation, rng):
    """TensorFlow 2.21's CPU bfloat16 filter gradient of grouped dilated convs is NaN from
    ~32×32 (SKNet-50's 56×56 stage); GroupConv2D routes around it. Gradients must be finite
    and match float32 to bfloat16 precision."""
    x = rng.standard_normal((2, size, size, channels)).astype("float32")
    results = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        layer = GroupConv2D(channels, 3, dilation_rate=dilation, groups=groups)
        layer.build(x.shape)
        layer.kernel.assign(rng.standard_normal(layer.kernel.shape).astype("float32") * 0.1
                            if policy == "float32" else results["float32"][2])
        xv = tf.Variable(x)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(layer(xv), tf.float32) ** 2)
        gx, gw = tape.gradient(loss, [xv, layer.kernel.value])
        results[policy] = (gx.numpy(), gw.numpy(), layer.kernel.numpy())
    keras.config.set_dtype_policy("float32")
    for ref, got in zip(results["float32"][:2], results["mixed_bfloat16"][:2]):
        assert np.all(np.isfinite(got))
        assert np.abs(got - ref).max() / np.abs(ref).max() < 2e-2
