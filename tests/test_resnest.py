"""ResNeSt (split attention): the layer against a NumPy reference written from timm's
`SplitAttn`, parameter counts against timm's, and `weights="imagenet"` from a release file
in timm's layout served on 127.0.0.1, hash-checked, giving timm's logits.

timm equivalence of every ResNeSt through keras-hub: tests/test_timm_hub.py; the family
harness, training steps under each CPU kernel set, exports, other backends and keras-hub
classes: the "resnest" family of tests/test_kernel_paths.py, which those tests run.
"""

import hashlib
import json
import os

import keras
import numpy as np
import pytest

from pth_writer import write_pth
from sknet_keras import applications, presets
from sknet_keras.applications import build_model
from sknet_keras.layers import SplitAttention
from test_weights import Server
from timm_random import random_state

EPS = 1e-5  # BN epsilon of timm's BatchNorm2d


def _conv(x, kernel, groups, stride, dilation=1):
    """NHWC grouped conv, symmetric padding dilation·(k−1)/2, by explicit taps."""
    k = kernel.shape[0]
    pad = dilation * (k - 1) // 2
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, c = x.shape
    ho, wo = h - dilation * (k - 1), w - dilation * (k - 1)
    cg, out = kernel.shape[2], kernel.shape[3]
    y = np.zeros((n, ho, wo, out))
    for g in range(groups):
        xs = x[..., g * cg:(g + 1) * cg]
        ks = kernel[..., (g * out // groups):((g + 1) * out // groups)]
        for i in range(k):
            for j in range(k):
                patch = xs[:, i * dilation:i * dilation + ho, j * dilation:j * dilation + wo]
                y[..., g * out // groups:(g + 1) * out // groups] += patch @ ks[i, j]
    return y[:, ::stride, ::stride]


def _bn(x, w):
    return (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + EPS) * w["gamma"] + w["beta"]


def split_attention_reference(x, w, radix, groups, stride, dilation):
    """timm's `SplitAttn.forward`, in NumPy (NCHW reshapes written for NHWC)."""
    y = np.maximum(_bn(_conv(x, w["conv/kernel"], groups * radix, stride, dilation),
                       w["bn0"]), 0)
    n, h, wd, rc = y.shape
    c = rc // radix
    splits = y.reshape(n, h, wd, radix, c)
    gap = splits.sum(axis=3).mean(axis=(1, 2))[:, None, None, :]
    z = np.maximum(_bn(_conv(gap, w["fc1/kernel"], groups, 1) + w["fc1/bias"], w["bn1"]), 0)
    logits = (_conv(z, w["fc2/kernel"], groups, 1) + w["fc2/bias"]).reshape(n, -1)
    if radix > 1:  # view(B, groups, radix, -1).transpose(1, 2), softmax over radix
        e = logits.reshape(n, groups, radix, -1).transpose(0, 2, 1, 3)
        e = np.exp(e - e.max(axis=1, keepdims=True))
        a = (e / e.sum(axis=1, keepdims=True)).reshape(n, radix, c)
    else:
        a = (1 / (1 + np.exp(-logits))).reshape(n, 1, c)
    return (splits * a[:, None, None]).sum(axis=3), a


def _weights_by_name(layer):
    """{"conv/kernel": ..., "bn0": {"gamma": ...}, ...} from the layer's variable paths."""
    out = {}
    for v in layer.weights:
        sub, name = v.path.split("/")[-2:]
        if sub.startswith("bn"):
            out.setdefault(sub, {})[name] = v.numpy().astype(np.float64)
        else:
            out[f"{sub}/{name}"] = v.numpy().astype(np.float64)
    return out


@pytest.mark.parametrize("radix,groups,stride,dilation", [
    (2, 1, 1, 1), (4, 2, 2, 1), (1, 4, 1, 2), (2, 2, 2, 2)])
def test_split_attention_is_timms_split_attn(radix, groups, stride, dilation, rng):
    layer = SplitAttention(16, radix=radix, groups=groups, strides=stride,
                           dilation_rate=dilation, return_attention=True)
    x = rng.normal(0, 1, (2, 9, 7, 16)).astype("float32")
    layer(x)
    for v in layer.weights:  # weights and BN statistics far from their initial values
        low, high = (0.5, 1.5) if v.path.endswith(("gamma", "moving_variance")) else (-1, 1)
        v.assign(rng.uniform(low, high, v.shape).astype("float32"))
    got, attention = (np.asarray(t) for t in layer(x, training=False))
    want, want_attention = split_attention_reference(x.astype(np.float64),
                                                     _weights_by_name(layer), radix, groups,
                                                     stride, dilation)
    np.testing.assert_allclose(attention, want_attention, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert np.abs(want[0] - want[1]).max() > 0.1 * np.abs(want).max()  # inputs differ
    assert attention.shape == (2, radix, 16) and attention.dtype == np.float32


def test_split_attention_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="divisible by groups"):
        SplitAttention(18, groups=4)
    with pytest.raises(ValueError, match=r"input channels \(12\) must be divisible by groups "
                                         r"× radix \(8\)"):
        SplitAttention(16, radix=4, groups=2)(np.zeros((1, 5, 5, 12), "float32"))


# timm 1.0.31's `sum(p.numel() for p in model.parameters())`, 1000 classes.
TIMM_PARAMETERS = {"resnest50d": 27_483_240, "resnest101e": 48_275_016,
                   "resnest50d_4s2x40d": 30_417_592, "resnest50d_1s4x24d": 25_677_000}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMETERS))
def test_parameters_are_timms(name):
    model = build_model(name, weights=None)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == TIMM_PARAMETERS[name]


def test_the_pyramid_is_at_strides_4_to_32():
    features = applications.feature_model("resnest50d", weights=None,
                                          input_shape=(64, 96, 3))
    shapes = [tuple(t.shape[1:3]) for t in features.outputs]
    assert shapes == [(16, 24), (8, 12), (4, 6), (2, 3)]


DATA = os.path.join(os.path.dirname(__file__), "data", "timm_hub", "resnest50d")


@pytest.mark.large
def test_imagenet_weights_are_timms_release_checked_and_converted(tmp_path, monkeypatch):
    """`ResNeSt50d()`: timm's release file (here: timm's keys with random, non-trivial values,
    served on 127.0.0.1) is downloaded, hash-checked, converted, and gives timm's logits."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKNET_KERAS_WEIGHTS_DIR", raising=False)
    with open(os.path.join(DATA, "state_dict_keys.json")) as f:
        manifest = json.load(f)
    tensors = random_state(manifest["keys"], manifest["shapes"], manifest["seed"])
    release = write_pth(str(tmp_path / "release.pth"), tensors, legacy=True)
    payload = open(release, "rb").read()
    key = presets.preset_key("resnest50d")
    assert key == "resnest50d.in1k" and presets.PRESETS[key].sha256 == "528c19ca"
    server = Server(payload)
    monkeypatch.setitem(presets.PRESETS, key, presets.Preset(**{
        **presets.PRESETS[key].__dict__, "url": server.url,
        "sha256": hashlib.sha256(payload).hexdigest()[:8]}))
    golden = np.load(os.path.join(DATA, "golden.npz"))
    x = golden["input_nchw"].transpose(0, 2, 3, 1)
    try:
        model = applications.ResNeSt50d(input_shape=x.shape[1:], classifier_activation=None)
    finally:
        server.close()
    want = golden["logits"]
    got = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


def _resnest_macs(name, size):
    """Multiply-adds of convolutions and the classifier, by arithmetic from timm's layout
    (docs/models/resnest.md): stem, then per unit 1×1 reduce, the split-attention conv
    (groups = cardinality × radix: w² / cardinality per position and tap), fc1, fc2, 1×1
    expand, the shortcut's 1×1 after its pool."""
    depths, stem, base, card, radix, avd_first = {
        "resnest50d": ((3, 4, 6, 3), 32, 64, 1, 2, False),
        "resnest101e": ((3, 4, 23, 3), 64, 64, 1, 2, False),
        "resnest50d_4s2x40d": ((3, 4, 6, 3), 32, 40, 2, 4, True),
        "resnest50d_1s4x24d": ((3, 4, 6, 3), 32, 24, 4, 1, True)}[name]
    h = (size + 1) // 2
    macs = 9 * h * h * (3 * stem + stem * stem + stem * 2 * stem)
    h, c = (h + 1) // 2, 2 * stem
    for stage, depth in enumerate(depths):
        planes = 64 * 2 ** stage
        w, out = int(planes * base / 64) * card, 4 * planes
        attn = max(32, int(w * radix / 4 + 4) // 8 * 8)
        for index in range(depth):
            stride = 2 if index == 0 and stage > 0 else 1
            h_out = (h - 1) // stride + 1
            h_conv = h_out if avd_first else h
            macs += c * w * h * h + 9 * w * w // card * h_conv * h_conv
            macs += w // card * attn + attn // card * radix * w + w * out * h_out * h_out
            if c != out or stride != 1:
                macs += c * out * h_out * h_out
            h, c = h_out, out
    return macs + c * 1000


@pytest.mark.parametrize("name", sorted(TIMM_PARAMETERS))
def test_multiply_adds_are_the_architectures(name):
    from sknet_keras.complexity import count_macs

    model = build_model(name, weights=None)
    assert count_macs(model) == _resnest_macs(name, model.input_shape[1])
