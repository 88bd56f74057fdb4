"""One test harness that every layer and every model family runs through.

Modelled on keras-hub's `run_vision_backbone_test` / `run_layer_test`: a single call checks
what each network or layer must do — config and `.keras` round trips, a checkpoint that
holds every variable (model and optimizer), mixed precision, batch size 1, variable input
size, and a training step. Exports, every family and format: tests/test_export.py.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from sknet_keras.applications import build_model
from sknet_keras.trainers.checkpoints import restore_checked


def _x(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def _randomize(model, seed=1):
    """Non-trivial weights and BN statistics, so that a lost variable shows."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith(("moving_variance", "gamma")):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype(w.dtype))
        else:
            w.assign((w.numpy() + rng.normal(0, 0.05, w.shape)).astype(w.dtype))


def _outputs(model, x):
    return [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(model(x, training=False))]


def _assert_same(a, b, rtol=1e-6, atol=1e-6):
    for p, q in zip(a, b):
        np.testing.assert_allclose(p, q, rtol=rtol, atol=atol)


def check_checkpoint_round_trip(build, x, y):
    """Save model + optimizer (after a step, so every slot is non-zero), restore into a
    fresh build with other initial values: every variable equal, bit for bit. The step runs
    eagerly: what is saved does not depend on it, and tracing it costs ~6× the step."""
    keras.utils.set_random_seed(1)
    model, opt = build(), keras.optimizers.SGD(0.01, momentum=0.9)
    model.compile(opt, "categorical_crossentropy", run_eagerly=True)
    model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.train.Checkpoint(model=model, optimizer=opt).save(os.path.join(tmp, "ckpt"))
        keras.utils.set_random_seed(2)
        other, other_opt = build(), keras.optimizers.SGD(0.01, momentum=0.9)
        other_opt.build(other.trainable_variables)
        assert len(other_opt.variables) == len(opt.variables)
        restore_checked(tf.train.Checkpoint(model=other, optimizer=other_opt), path)
    pairs = list(zip(model.weights, other.weights)) + list(zip(opt.variables,
                                                               other_opt.variables))
    differ = [a.path for a, b in pairs if not np.array_equal(a.numpy(), b.numpy())]
    assert not differ, f"not restored: {differ[:5]} ({len(differ)} in all)"


def run_backbone_test(config, input_size=64, classes=5):
    """Everything a registry network must do, on a (mini) configuration."""
    shape = (input_size, input_size, 3)
    x = _x((2,) + shape)
    y = keras.utils.to_categorical([0, classes - 1], classes)

    def build(**kwargs):
        return build_model(config, input_shape=shape, classes=classes, **kwargs)

    model = build()
    _randomize(model)
    expected = _outputs(model, x)
    assert expected[0].shape == (2, classes)
    np.testing.assert_allclose(expected[0].sum(-1), 1.0, rtol=1e-5)

    # Config round trip.
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    _assert_same(_outputs(clone, x), expected)

    # .keras round trip.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        model.save(path)
        _assert_same(_outputs(keras.saving.load_model(path), x), expected)

    check_checkpoint_round_trip(build, x, y)

    # Batch size 1: predicts (traced, as served) and trains (eagerly; `fit` below traces).
    one = build()
    one.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy", run_eagerly=True)
    assert np.isfinite(one.train_on_batch(x[:1], y[:1]))
    assert one.predict(x[:1], verbose=0).shape == (1, classes)

    # Variable input size without the top.
    features = build_model(config, include_top=False, input_shape=(None, None, 3),
                           pooling="avg")
    width = features.output_shape[-1]
    for size in (input_size, input_size + 32):
        assert features.predict(_x((1, size, size + 16, 3)), verbose=0).shape == (1, width)

    # One fit step moves every trainable weight... that gets a gradient.
    fit = build()
    before = [w.numpy() for w in fit.trainable_weights]
    fit.compile(keras.optimizers.SGD(0.1), "categorical_crossentropy")
    history = fit.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    moved = sum(not np.array_equal(b, w.numpy()) for b, w in zip(before, fit.trainable_weights))
    assert moved >= 0.9 * len(before), f"{moved} of {len(before)} weights moved"

    check_mixed_precision(config, shape, classes, x)


def check_mixed_precision(config, shape, classes, x):
    """Under mixed_bfloat16: every layer computes in bfloat16 but the classifier and the
    attention softmax (float32); variables stay float32; outputs are float32."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(config, input_shape=shape, classes=classes)
    finally:
        keras.config.set_dtype_policy("float32")
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        expected = "float32" if layer.name == "predictions" else "bfloat16"
        assert layer.compute_dtype == expected, (layer.name, layer.compute_dtype)
        assert all(w.dtype == "float32" for w in layer.weights), layer.name
    outputs = model(x, training=False)
    assert outputs.dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(outputs)))
    for layer in model.layers:
        if getattr(layer, "return_attention", False):
            assert layer.output[1].dtype == "float32", layer.name


def run_layer_test(make_layer, input_shape, expected_output_shape=None,
                   mixed_output_dtype="bfloat16"):
    """A layer: config and `.keras` round trips, checkpoint, mixed precision, batch size 1."""
    x = _x((2,) + tuple(input_shape))
    layer = make_layer()
    out = layer(x)
    first = keras.tree.flatten(out)[0]
    if expected_output_shape is not None:
        assert tuple(first.shape) == (2,) + tuple(expected_output_shape)
    expected = [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(layer(x))]

    clone = layer.__class__.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    _assert_same([keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(clone(x))],
                 expected)
    assert keras.saving.get_registered_name(layer.__class__).startswith("sknet_keras>")

    def build():
        inputs = keras.Input(input_shape)
        y = keras.tree.flatten(make_layer()(inputs))[0]
        if len(y.shape) == 4:
            y = keras.layers.GlobalAveragePooling2D()(y)
        elif len(y.shape) > 2:
            y = keras.layers.Flatten()(y)
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(y))

    model = build()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        model.save(path)
        _assert_same(_outputs(keras.saving.load_model(path), x), _outputs(model, x))
    check_checkpoint_round_trip(build, x, keras.utils.to_categorical([0, 2], 3))

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = make_layer()
    finally:
        keras.config.set_dtype_policy("float32")
    outs = keras.tree.flatten(mixed(x))
    assert outs[0].dtype == mixed_output_dtype
    assert all(w.dtype == "float32" for w in mixed.weights)
    one = keras.tree.flatten(make_layer()(x[:1], training=True))[0]
    assert one.shape[0] == 1 and np.all(np.isfinite(keras.ops.convert_to_numpy(one)))
