"""Caffe for the tests, without Caffe: a prototxt parser, an executor of Caffe's layer
semantics, random release blobs and caffemodel writing.

The executor (`run_caffe_net`) is written from Caffe's layer sources, independently of the
Keras models it checks: grouped convolutions group by group, BatchNorm with its
moving-average factor, Scale (per-channel, or by a second bottom as in the SE blocks), Axpy,
Concat, and pooling with Caffe's output size (ceil mode, the last window clipped to start
inside the padded input) and Caffe's AVE divisor (the window clipped to the *padded* input).
Tensors are NHWC float64; channels keep Caffe's order.
"""

import re

import numpy as np
import tensorflow as tf

from caffe_writer import write_caffemodel

# ---------------------------------------------------------------------------------------
# Prototxt (protobuf text format) parsing.

_TOKEN = re.compile(r'\s*(?:#[^\n]*|"((?:[^"\\]|\\.)*)"|([{}:])|([^\s{}:"#]+))')


def _tokens(text):
    for m in _TOKEN.finditer(text):
        string, punct, word = m.groups()
        if string is not None:
            yield ("str", string)
        elif punct or word:
            yield ("sym", punct or word)


def _value(word):
    for cast in (int, float):
        try:
            return cast(word)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(word, word)


def parse_prototxt(text):
    """A text-format message as {field: [values]} (nested messages are dicts)."""
    stack, field = [{}], None
    for kind, tok in _tokens(text):
        if kind == "sym" and tok == "}":
            stack.pop()
        elif kind == "sym" and tok == ":":
            continue
        elif kind == "sym" and tok == "{":
            child = {}
            stack[-1].setdefault(field, []).append(child)
            stack.append(child)
        elif field is None:
            field = tok
            continue
        else:
            stack[-1].setdefault(field, []).append(tok if kind == "str" else _value(tok))
        field = None
    if len(stack) != 1:
        raise ValueError("unbalanced braces in prototxt")
    return stack[0]


def _one(message, key, default=None):
    values = message.get(key, [default])
    if len(values) != 1:
        raise ValueError(f"{key}: one value expected, got {values}")
    return values[0]


def _conv_params(p):
    return dict(num_output=_one(p, "num_output"), kernel=_one(p, "kernel_size"),
                stride=_one(p, "stride", 1), pad=_one(p, "pad", 0), group=_one(p, "group", 1),
                bias=_one(p, "bias_term", True), dilation=_one(p, "dilation", 1))


def _pool_params(p):
    return dict(pool=_one(p, "pool", "MAX"), kernel=_one(p, "kernel_size", None),
                stride=_one(p, "stride", 1), pad=_one(p, "pad", 0),
                global_pooling=_one(p, "global_pooling", False))


_PARAMS = {"Convolution": ("convolution_param", _conv_params),
           "Pooling": ("pooling_param", _pool_params),
           "InnerProduct": ("inner_product_param",
                            lambda p: dict(num_output=_one(p, "num_output"))),
           "BatchNorm": ("batch_norm_param", lambda p: dict(eps=_one(p, "eps", 1e-5))),
           "Scale": ("scale_param", lambda p: dict(axis=_one(p, "axis", 1),
                                                   bias_term=_one(p, "bias_term", False))),
           # The SKNet release's layers (implus/SKNet's Caffe).
           "CuDNNBatchNorm": ("batch_norm_param", lambda p: dict(eps=_one(p, "eps", 1e-5))),
           "Reshape": ("reshape_param",
                       lambda p: dict(dims=list(_one(p, "shape", {}).get("dim", [])))),
           "Softmax": ("softmax_param", lambda p: dict(axis=_one(p, "axis", 1))),
           "Slice": ("slice_param", lambda p: dict(axis=_one(p, "axis", 1),
                                                   points=list(p.get("slice_point", [])))),
           "Eltwise": ("eltwise_param", lambda p: dict(operation=_one(p, "operation", "SUM")))}


def prototxt_layers(path):
    """The layers of a deploy prototxt as the executor's dicts (Input layers left out)."""
    with open(path) as f:
        net = parse_prototxt(f.read())
    layers = []
    for layer in net.get("layer", []):
        kind = _one(layer, "type")
        if kind == "Input":
            continue
        tops = list(layer.get("top", []))
        entry = dict(name=_one(layer, "name"), type=kind, bottom=list(layer.get("bottom", [])),
                     top=tops[0], tops=tops)
        if kind in _PARAMS:
            key, read = _PARAMS[kind]
            entry.update(read(_one(layer, key, {})))
        layers.append(entry)
    return layers


# ---------------------------------------------------------------------------------------
# Blobs.

def _has_blobs(layer):
    return layer["type"] in ("Convolution", "BatchNorm", "CuDNNBatchNorm", "InnerProduct") or (
        layer["type"] == "Scale" and len(layer["bottom"]) == 1)


def random_blobs(layers, in_channels, rng):
    """Random blobs of Caffe's shapes, including a non-trivial BatchNorm factor."""
    blobs, channels = {}, {"data": in_channels}
    for layer in layers:
        kind, name = layer["type"], layer["name"]
        c_in = channels[layer["bottom"][0]]
        channels[layer["top"]] = c_in
        if kind == "Convolution":
            k, g, o = layer["kernel"], layer["group"], layer["num_output"]
            std = np.sqrt(2.0 / (c_in // g * k * k))
            blobs[name] = [rng.normal(0, std, (o, c_in // g, k, k)).astype("float32")]
            if layer["bias"]:
                blobs[name].append(rng.normal(0, 0.2, (o,)).astype("float32"))
            channels[layer["top"]] = o
        elif kind == "BatchNorm":
            factor = np.float32(rng.uniform(0.5, 3.0))
            mean = rng.normal(0, 0.3, (c_in,)).astype("float32")
            var = rng.uniform(0.5, 2.0, (c_in,)).astype("float32")
            blobs[name] = [mean * factor, var * factor, np.array([factor], "float32")]
        elif kind == "CuDNNBatchNorm":  # [scale, bias, mean, variance]
            low, high = (0.1, 0.3) if "increase" in name else (0.5, 1.5)
            blobs[name] = [rng.uniform(low, high, (c_in,)).astype("float32"),
                           rng.normal(0, 0.2, (c_in,)).astype("float32"),
                           rng.normal(0, 0.3, (c_in,)).astype("float32"),
                           rng.uniform(0.5, 2.0, (c_in,)).astype("float32")]
        elif kind == "Scale" and _has_blobs(layer):
            # Small residual-branch gains keep a deep random net's activations in range.
            low, high = (0.1, 0.3) if "increase" in name else (0.5, 1.5)
            blobs[name] = [rng.uniform(low, high, (c_in,)).astype("float32"),
                           rng.normal(0, 0.2, (c_in,)).astype("float32")]
        elif kind == "InnerProduct":
            o = layer["num_output"]
            blobs[name] = [rng.normal(0, np.sqrt(1.0 / c_in), (o, c_in)).astype("float32"),
                           rng.normal(0, 0.1, (o,)).astype("float32")]
            channels[layer["top"]] = o
        elif kind == "Concat":
            channels[layer["top"]] = sum(channels[b] for b in layer["bottom"])
        elif kind == "Axpy":  # a · x + y: the channels of x
            channels[layer["top"]] = channels[layer["bottom"][1]]
        for top in layer.get("tops", [])[1:]:
            channels[top] = channels[layer["top"]]
    return blobs


def calibrate_batch_norms(layers, blobs, data, rng):
    """Give each BatchNorm (Caffe's, or the SKNet release's CuDNNBatchNorm) statistics near
    those of its input on `data` (jittered; the stored factor kept), as a trained network
    has.

    With random statistics a deep net's activations drift to the hundreds, where the SE
    gates' sigmoids turn a 1e-7 rounding difference into 1e-3 at the logits; calibrated,
    activations stay O(1) and float32 agrees with float64 as it does for the release.
    """
    tensors = {"data": np.asarray(data, np.float64)}
    for layer in layers:
        bottoms = [tensors[n] for n in layer["bottom"]]
        if layer["type"] in ("BatchNorm", "CuDNNBatchNorm"):
            x = bottoms[0]
            mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2)) + 1e-3
            mean = mean + 0.1 * np.sqrt(var) * rng.standard_normal(mean.shape)
            var = var * rng.uniform(0.8, 1.25, var.shape)
            b = blobs[layer["name"]]
            if layer["type"] == "BatchNorm":
                blobs[layer["name"]] = [(mean * b[2][0]).astype("float32"),
                                        (var * b[2][0]).astype("float32"), b[2]]
            else:  # [scale, bias, mean, variance]
                blobs[layer["name"]] = b[:2] + [mean.astype("float32"), var.astype("float32")]
        out = _layer(layer, blobs.get(layer["name"]), bottoms)
        for top, value in zip(layer.get("tops", [layer["top"]]), out if isinstance(out, list)
                              else [out]):
            tensors[top] = value
    return blobs


def write_release(path, layers, blobs):
    write_caffemodel(path, blobs, types={layer["name"]: layer["type"] for layer in layers})


# ---------------------------------------------------------------------------------------
# The executor.

def pooled_size(size, kernel, stride, pad):
    """Caffe's PoolingLayer::Reshape: ceil mode; with padding the last window must start
    inside the image or the left padding."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _windows(size, kernel, stride, pad):
    """Per output index: (start, end) clipped to the input, and the AVE divisor's extent
    (the window clipped to the padded input only)."""
    out = []
    for i in range(pooled_size(size, kernel, stride, pad)):
        start = i * stride - pad
        end_padded = min(start + kernel, size + pad)
        out.append((max(start, 0), min(end_padded, size), end_padded - start))
    return out


def caffe_pool(x, pool, kernel, stride=1, pad=0):
    """Caffe's MAX / AVE pooling of NHWC `x`, window by window."""
    rows = _windows(x.shape[1], kernel, stride, pad)
    cols = _windows(x.shape[2], kernel, stride, pad)
    y = np.empty((x.shape[0], len(rows), len(cols), x.shape[3]), x.dtype)
    for i, (h0, h1, hn) in enumerate(rows):
        for j, (w0, w1, wn) in enumerate(cols):
            window = x[:, h0:h1, w0:w1]
            if pool == "MAX":
                y[:, i, j] = window.max(axis=(1, 2))
            elif pool == "AVE":
                y[:, i, j] = window.sum(axis=(1, 2)) / (hn * wn)
            else:
                raise AssertionError(pool)
    return y


def _convolution(layer, b, x):
    g, p, s, d = layer["group"], layer["pad"], layer["stride"], layer.get("dilation", 1)
    w = b[0].astype(np.float64)
    per = w.shape[0] // g
    xs = np.split(np.pad(x, ((0, 0), (p, p), (p, p), (0, 0))), g, axis=-1)
    if s > 1 and d > 1:  # tf.nn.conv2d takes one of the two: dilate, then subsample
        ys = [tf.nn.conv2d(xs[i], np.transpose(w[i * per:(i + 1) * per], (2, 3, 1, 0)), 1,
                           "VALID", dilations=d).numpy()[:, ::s, ::s] for i in range(g)]
    else:
        ys = [tf.nn.conv2d(xs[i], np.transpose(w[i * per:(i + 1) * per], (2, 3, 1, 0)), s,
                           "VALID", dilations=d).numpy() for i in range(g)]
    y = np.concatenate(ys, axis=-1)
    return y + b[1] if layer["bias"] else y


def _pooling(layer, x):
    if layer.get("global_pooling"):
        return x.mean(axis=(1, 2), keepdims=True)
    return caffe_pool(x, layer["pool"], layer["kernel"], layer["stride"], layer.get("pad", 0))


def _scale(layer, b, bottoms):
    if len(bottoms) == 2:  # Scale by a second bottom of shape (N, C): the SE recalibration
        x, s = bottoms
        assert layer.get("axis") == 0 and s.shape == (x.shape[0], x.shape[-1]), s.shape
        return x * s[:, None, None, :]
    return bottoms[0] * b[0] + b[1]


def _to_nchw(x):
    return np.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def _from_nchw(x):
    return np.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def _reshape(layer, x):
    """Caffe's Reshape on the NCHW blob: `dim: 0` copies the input's axis, `-1` is inferred;
    with no dims (the SENet releases' prototxt helpers) (N, C, 1, 1) → (N, C)."""
    x = _to_nchw(x)
    dims = layer.get("dims") or [0, 0]
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = x.size // known
    return _from_nchw(x.reshape(shape))


def _slice(layer, x):
    """Caffe's Slice of the NCHW blob at `points` along `axis`: one array per top."""
    return [_from_nchw(part) for part in np.split(_to_nchw(x), layer["points"], layer["axis"])]


def _softmax(layer, x):
    x = _to_nchw(x)
    e = np.exp(x - x.max(axis=layer.get("axis", 1), keepdims=True))
    return _from_nchw(e / e.sum(axis=layer.get("axis", 1), keepdims=True))


def _layer(layer, b, bottoms):
    kind, x = layer["type"], bottoms[0]
    if kind == "Convolution":
        return _convolution(layer, b, x)
    if kind == "BatchNorm":
        f = 0.0 if b[2][0] == 0 else 1.0 / b[2][0]
        return (x - b[0] * f) / np.sqrt(b[1] * f + layer.get("eps", 1e-5))
    if kind == "Scale":
        return _scale(layer, b, bottoms)
    if kind == "CuDNNBatchNorm":
        return (x - b[2]) / np.sqrt(b[3] + layer.get("eps", 1e-5)) * b[0] + b[1]
    if kind == "Pooling":
        return _pooling(layer, x)
    if kind == "Slice":
        return _slice(layer, x)
    if kind == "Eltwise":
        assert layer.get("operation", "SUM") == "SUM", layer
        return sum(bottoms)
    if kind == "InnerProduct":  # Caffe flattens (C, H, W)
        flat = np.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        return flat @ b[0].T.astype(np.float64) + b[1]
    simple = {"ReLU": lambda: np.maximum(x, 0),
              "Sigmoid": lambda: 1 / (1 + np.exp(-np.clip(x, -60, 60))),
              "Concat": lambda: np.concatenate(bottoms, axis=-1),
              "Axpy": lambda: bottoms[0] * bottoms[1] + bottoms[2],
              "Reshape": lambda: _reshape(layer, x),
              "Softmax": lambda: _softmax(layer, x) if "axis" in layer else tf.nn.softmax(
                  x).numpy()}
    if kind not in simple:
        raise AssertionError(kind)
    return simple[kind]()


def run_caffe_net(layers, blobs, data, output=None):
    """Execute a layer list with Caffe's semantics on NHWC float64 data; returns the blob
    `output` (default: the last layer's top)."""
    output = output or layers[-1]["top"]
    last = max(i for i, layer in enumerate(layers) if layer["top"] == output)  # in-place too
    tensors = {"data": np.asarray(data, np.float64)}
    for layer in layers[:last + 1]:
        bottoms = [tensors[n] for n in layer["bottom"]]
        out = _layer(layer, blobs.get(layer["name"]), bottoms)
        for top, value in zip(layer.get("tops", [layer["top"]]), out if isinstance(out, list)
                              else [out]):
            tensors[top] = value
    return tensors[output]
