"""GroupConv2D, SelectiveKernel and SqueezeExcite against slow, obviously-correct references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sknet_keras.layers import GroupConv2D, PointwiseConv2D, SelectiveKernel, SqueezeExcite


def reference_conv(x, w, stride, dilation, pad, groups):
    """Direct definition of a grouped, dilated, strided, symmetrically padded conv (NHWC)."""
    n, h, wd, _ = x.shape
    kh, kw, cg, out = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    og = out // groups
    y = np.zeros((n, ho, wo, out), np.float64)
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, i * dilation: i * dilation + stride * (ho - 1) + 1: stride,
                           j * dilation: j * dilation + stride * (wo - 1) + 1: stride,
                           g * cg:(g + 1) * cg]
                y[..., g * og:(g + 1) * og] += patch @ w[i, j, :, g * og:(g + 1) * og]
    return y


@pytest.mark.parametrize(
    "kernel,stride,dilation,groups,size",
    [
        (3, 1, 1, 4, 9),
        (3, 2, 1, 4, 9),
        (3, 2, 2, 4, 9),   # SK's strided "5×5" branch: the subsample construction
        (3, 2, 2, 8, 10),  # even size
        (3, 2, 3, 2, 11),  # dilation not a multiple of the stride: conv then subsample
        (5, 2, 1, 8, 12),
        (3, 1, 2, 1, 7),
    ],
)
def test_group_conv_matches_reference(kernel, stride, dilation, groups, size, rng):
    x = rng.standard_normal((2, size, size + 1, 16)).astype("float32")
    layer = GroupConv2D(16, kernel, strides=stride, dilation_rate=dilation, groups=groups)
    y = keras.ops.convert_to_numpy(layer(x))
    w = keras.ops.convert_to_numpy(layer.kernel)
    ref = reference_conv(x, w, stride, dilation, dilation * (kernel - 1) // 2, groups)
    assert y.shape == ref.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_group_conv_rejects_bad_arguments():
    with pytest.raises(ValueError, match="divisible by groups"):
        GroupConv2D(10, groups=4)
    with pytest.raises(ValueError, match=r"input channels \(6\) must be divisible"):
        GroupConv2D(8, groups=4)(np.zeros((1, 8, 8, 6), "float32"))
    with pytest.raises(ValueError, match="kernel_size"):
        GroupConv2D(8, kernel_size=(3, 3, 3))


def _randomize_bn(layer, rng):
    for sub in layer._flatten_layers():
        if isinstance(sub, keras.layers.BatchNormalization):
            c = sub.gamma.shape[0]
            sub.gamma.assign(rng.uniform(0.5, 1.5, c))
            sub.beta.assign(rng.normal(0, 0.2, c))
            sub.moving_mean.assign(rng.normal(0, 0.2, c))
            sub.moving_variance.assign(rng.uniform(0.5, 1.5, c))


def reference_sk(x, layer):
    """The SK unit of docs/architecture.md written out in NumPy, reading the layer's weights
    (inference-mode BN)."""
    def bn(v, b):
        g, beta, mu, var = (keras.ops.convert_to_numpy(t) for t in
                            (b.gamma, b.beta, b.moving_mean, b.moving_variance))
        return (v - mu) / np.sqrt(var + 1e-5) * g + beta

    m = layer.num_branches
    xs = np.split(x, m, axis=-1) if layer.split_input else [x] * m
    feats = []
    for xi, (k, d, g), conv, b in zip(xs, layer.branches, layer.branch_convs, layer.branch_bns):
        w = keras.ops.convert_to_numpy(conv.kernel)
        y = bn(reference_conv(xi, w, layer.strides, d, d * (k - 1) // 2, g), b)
        feats.append(np.maximum(y, 0) if layer.branch_activation == "relu" else y)
    u = sum(feats)
    s = u.mean(axis=(1, 2))
    z = np.maximum(bn(s @ keras.ops.convert_to_numpy(layer.attn.fuse_conv.kernel), layer.attn.fuse_bn), 0)
    logits = (z @ keras.ops.convert_to_numpy(layer.attn.select_conv.kernel)).reshape(len(x), m, -1)
    a = np.exp(logits - logits.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    v = sum(a[:, i, None, None, :] * feats[i] for i in range(m))
    return v, a


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(branches=2, groups=4, strides=1),
        dict(branches=2, groups=4, strides=2),
        dict(branches=3, groups=2, strides=2),
        dict(branches=[(3, 1), (5, 1, 8)], groups=4, strides=2),
        dict(branches=2, groups=1, strides=2, split_input=True, reduction=8,
             min_attn_channels=16, attn_divisor=16),
        dict(branches=2, groups=16, strides=2, branch_activation=None, reduction=4),
    ],
)
def test_selective_kernel_matches_reference(kwargs, rng):
    x = rng.standard_normal((3, 9, 8, 16)).astype("float32")
    layer = SelectiveKernel(16, return_attention=True, **{"min_attn_channels": 8, **kwargs})
    layer.build(x.shape)
    _randomize_bn(layer, rng)
    for w in (layer.attn.fuse_conv.kernel, layer.attn.select_conv.kernel):
        w.assign(rng.normal(0, 0.5, w.shape))
    v, a = (keras.ops.convert_to_numpy(t) for t in layer(x, training=False))
    rv, ra = reference_sk(x, layer)
    assert a.shape == (3, layer.num_branches, 16)
    np.testing.assert_allclose(a, ra, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v, rv, rtol=1e-4, atol=1e-4)


def test_selective_kernel_attention_is_softmax_over_branches(rng):
    layer = SelectiveKernel(32, branches=3, groups=8, return_attention=True)
    x = rng.standard_normal((4, 8, 8, 32)).astype("float32")
    layer.build(x.shape)
    layer.attn.select_conv.kernel.assign(rng.normal(0, 2.0, layer.attn.select_conv.kernel.shape))
    _, a = layer(x, training=False)
    a = keras.ops.convert_to_numpy(a)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-6)
    assert not np.allclose(a.sum(axis=2), a.shape[2] / a.shape[1])  # not a channel softmax
    assert a.min() > 0 and a.std() > 1e-3  # the attention is not trivially uniform


def test_selective_kernel_without_attention_is_plain_sum(rng):
    x = rng.standard_normal((2, 8, 8, 16)).astype("float32")
    layer = SelectiveKernel(16, groups=4, attention=False)
    y = keras.ops.convert_to_numpy(layer(x, training=False))
    feats = [keras.ops.convert_to_numpy(keras.ops.relu(bn(conv(x), training=False)))
             for conv, bn in zip(layer.branch_convs, layer.branch_bns)]
    np.testing.assert_allclose(y, feats[0] + feats[1], rtol=1e-5, atol=1e-5)
    assert layer.attn is None
    # Branch convs + branch BN gamma/beta only.
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == 2 * (9 * 4 * 16 + 32)


def test_selective_kernel_parameter_count():
    """SK[2,32,16] at C=256: 2 grouped 3×3 + 2 BN + fuse C→d + BN(d) + select d→2C, no biases."""
    layer = SelectiveKernel(256)
    layer.build((None, 14, 14, 256))
    d = 32
    expected = 2 * (9 * 8 * 256) + 2 * 2 * 256 + 256 * d + 2 * d + d * 2 * 256
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == expected
    assert SelectiveKernel(1024).attn_channels == 64


def test_selective_kernel_batch_size_one_trains(rng):
    layer = SelectiveKernel(16, groups=4, strides=2)
    x = tf.constant(rng.standard_normal((1, 7, 7, 16)).astype("float32"))
    with tf.GradientTape() as tape:
        y = layer(x, training=True)
        loss = tf.reduce_sum(y ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert y.shape == (1, 4, 4, 16)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)


def test_selective_kernel_mixed_precision_softmax_in_float32(rng):
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    layer = SelectiveKernel(16, groups=4, return_attention=True)
    v, a = layer(rng.standard_normal((2, 8, 8, 16)).astype("float32"))
    assert v.dtype == "bfloat16"
    assert a.dtype == "float32"
    assert layer.branch_convs[0].kernel.dtype == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(a).sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(filters=16, branches=0), "branches must be >= 1"),
        (dict(filters=16, branches=[(4, 1)]), "kernel_size must be odd"),
        (dict(filters=18, groups=4), "divisible by the branch groups"),
        (dict(filters=16, attention=False, return_attention=True), "needs attention=True"),
        (dict(filters=16, branches=[(3,)]), r"\(kernel_size, dilation\[, groups\]\)"),
        (dict(filters=16, groups=4, attn_channels=8, reduction=4), "attn_channels or reduction.*not both"),
        (dict(filters=16, groups=4, reduction=0), "reduction must be positive"),
    ],
)
def test_selective_kernel_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelectiveKernel(**kwargs)


def test_selective_kernel_config_stores_the_attention_width_not_how_it_was_made():
    """d = max(C / r, L) rounded: the config keeps d only, and configs written before (with
    reduction, min_attn_channels and attn_divisor beside d) still load to the same d."""
    layer = SelectiveKernel(256, reduction=8, min_attn_channels=16, attn_divisor=16)
    assert layer.attn_channels == 32  # make_divisible(256 / 8, 16)
    config = layer.get_config()
    assert config["attn_channels"] == 32
    assert not {"reduction", "min_attn_channels", "attn_divisor"} & set(config)
    old = dict(config, reduction=16, min_attn_channels=32, attn_divisor=1)
    assert SelectiveKernel.from_config(old).attn_channels == 32
    assert SelectiveKernel(64).attn_channels == 32 and SelectiveKernel(1024).attn_channels == 64


def test_selective_kernel_split_input_needs_divisible_channels():
    with pytest.raises(ValueError, match="split_input needs input channels"):
        SelectiveKernel(16, groups=1, split_input=True, branches=2)(np.zeros((1, 8, 8, 15)))


def test_squeeze_excite_matches_reference(rng):
    x = rng.standard_normal((2, 5, 5, 64)).astype("float32")
    layer = SqueezeExcite(16)
    y = keras.ops.convert_to_numpy(layer(x))
    k1, b1, k2, b2 = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    s = np.maximum(x.mean((1, 2)) @ k1 + b1, 0) @ k2 + b2
    np.testing.assert_allclose(y, x / (1 + np.exp(-s))[:, None, None, :], rtol=1e-5, atol=1e-6)
    assert k1.shape == (64, 4) and b1.shape == (4,)


@pytest.mark.parametrize(
    "layer",
    [
        GroupConv2D(16, 3, strides=2, dilation_rate=2, groups=4, name="g"),
        SelectiveKernel(16, branches=[(3, 1), (3, 3, 2)], groups=4, strides=2,
                        return_attention=True, name="sk"),
        SqueezeExcite(4, name="se"),
        PointwiseConv2D(8, strides=2, use_bias=True, name="pw"),
    ],
)
def test_layers_round_trip_through_config(layer, rng):
    x = rng.standard_normal((2, 8, 8, 16)).astype("float32")
    y = layer(x)
    clone = layer.__class__.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    y2 = clone(x)
    for a, b in zip(keras.tree.flatten(y), keras.tree.flatten(y2)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   rtol=1e-6)
    assert keras.saving.get_registered_name(layer.__class__).startswith("sknet_keras>")


def _one_by_one_model(conv):
    inputs = keras.Input((6, 6, 4))
    x = conv(8, 1, strides=2, use_bias=False, name="conv2_block1_0_conv")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_pointwise_conv_restores_checkpoints_written_with_keras_conv2d(tmp_path, rng):
    """The ResNets' 1×1 convs were Keras' Conv2D: training checkpoints written then (variables
    tracked by attribute) and weights files must load into PointwiseConv2D unchanged."""
    old = _one_by_one_model(keras.layers.Conv2D)
    old.set_weights([rng.standard_normal(w.shape).astype("float32") for w in old.weights])
    path = tf.train.Checkpoint(model=old).write(str(tmp_path / "ckpt"))
    old.save_weights(tmp_path / "old.weights.h5")
    x = rng.standard_normal((2, 6, 6, 4)).astype("float32")

    new = _one_by_one_model(PointwiseConv2D)
    tf.train.Checkpoint(model=new).read(path).assert_consumed()
    np.testing.assert_array_equal(new.weights[0].numpy(), old.weights[0].numpy())
    np.testing.assert_allclose(new.predict(x, verbose=0), old.predict(x, verbose=0), rtol=1e-5)
    again = _one_by_one_model(PointwiseConv2D)
    again.load_weights(tmp_path / "old.weights.h5")
    np.testing.assert_array_equal(again.weights[0].numpy(), old.weights[0].numpy())


def test_pointwise_conv_refuses_what_is_not_a_1x1():
    with pytest.raises(ValueError, match="PointwiseConv2D is a 1×1"):
        PointwiseConv2D(8, 3)
    with pytest.raises(ValueError, match="PointwiseConv2D is a 1×1"):
        PointwiseConv2D(8, 1, padding="same")
