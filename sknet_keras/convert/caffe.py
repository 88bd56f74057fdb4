"""Official Caffe releases: read `.caffemodel` files and map their blobs by layer name.

Two releases, two naming schemes (both checked against the official prototxts):
- SKNet (implus/SKNet): `conv2_1/1x1_reduce`, one `CuDNNBatchNorm` layer per BN whose blobs
  are [scale, bias, mean, var];
- SENet (hujie-frank/SENet: SE-ResNet-50/101/152, SE-ResNeXt-50/101, SENet-154):
  `conv2_1_1x1_reduce`, BN as Caffe's `BatchNorm` ([mean·f, var·f, f], f the moving-average
  scale factor) followed by a `Scale` layer ([gamma, beta]) named `<bn>/scale`.

A `.caffemodel` is a serialized `caffe.NetParameter`. We read the few fields we need
(layer name and type, blobs, blob shape and data) straight from the protobuf wire format:
written by hand because the alternative is installing Caffe or compiling caffe.proto, and
the fields involved are six. `write_caffemodel` is the inverse, used by tests.
"""


import math

import numpy as np

from sknet_keras.convert.common import (conv_kernel, dense_kernel, family_mapping, flat,
                                        pointwise_kernel)
from sknet_keras.models.resnet import units

# caffe.proto field numbers.
_NET_LAYER, _NET_V1_LAYERS = 100, 2
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7
_V1_NAME, _V1_BLOBS = 4, 6
_BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE = 5, 7, 8
_SHAPE_DIM = 1


class CaffeFormatError(ValueError):
    pass


def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CaffeFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffeFormatError("varint too long")


def _fields(buf):
    """Yield (field number, wire type, value) of one message; value is int or memoryview."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise CaffeFormatError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise CaffeFormatError("message runs past the end of the file")
        yield field, wire, value


def _packed_varints(value):
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _blob(buf):
    legacy, shape, chunks, doubles = {}, None, [], []
    for field, wire, value in _fields(buf):
        if field in _BLOB_LEGACY_DIMS and wire == 0:
            legacy[field] = value
        elif field == _BLOB_SHAPE:
            dims = []
            for f, w, v in _fields(value):
                if f == _SHAPE_DIM:
                    dims.extend(_packed_varints(v) if w == 2 else [v])
            shape = dims
        elif field == _BLOB_DATA:
            chunks.append(np.frombuffer(bytes(value), "<f4"))
        elif field == _BLOB_DOUBLE:
            doubles.append(np.frombuffer(bytes(value), "<f8").astype(np.float32))
    data = np.concatenate(chunks + doubles) if (chunks or doubles) else np.zeros(0, np.float32)
    if shape is None:
        shape = [legacy.get(f, 1) for f in _BLOB_LEGACY_DIMS] if legacy else [data.size]
    if math.prod(shape) != data.size:  # exact (NumPy's product wraps around at 2^63)
        raise CaffeFormatError(f"blob of shape {shape} holds {data.size} values")
    return data.reshape(shape)


def read_caffemodel_layers(path):
    """{layer name: (layer type or None, [blob arrays])} for every layer that has blobs."""
    with open(path, "rb") as f:
        buf = memoryview(f.read())
    layers = {}
    try:
        for field, wire, value in _fields(buf):
            if wire != 2 or field not in (_NET_LAYER, _NET_V1_LAYERS):
                continue
            v2 = field == _NET_LAYER
            name_field, blob_field = ((_LAYER_NAME, _LAYER_BLOBS) if v2
                                      else (_V1_NAME, _V1_BLOBS))
            name, kind, blobs = None, None, []
            for f, w, v in _fields(value):
                if f == name_field and w == 2:
                    name = bytes(v).decode("utf-8")
                elif v2 and f == _LAYER_TYPE and w == 2:
                    kind = bytes(v).decode("utf-8")
                elif f == blob_field and w == 2:
                    blobs.append(_blob(v))
            if name is not None and blobs:
                layers[name] = (kind, blobs)
    except ValueError as e:  # CaffeFormatError, bad UTF-8, a blob of a ragged byte count
        raise CaffeFormatError(f"{path!r} is not a readable .caffemodel: {e}") from None
    if not layers:
        raise CaffeFormatError(f"{path!r} is not a .caffemodel (no layer with weights found)")
    return layers


def read_caffemodel(path):
    """{layer name: [blob arrays]} for every layer of a `.caffemodel` that has blobs."""
    return {name: blobs for name, (_, blobs) in read_caffemodel_layers(path).items()}


_BN_BLOBS = ("gamma", "beta", "moving_mean", "moving_variance")  # [scale, bias, mean, var]


def caffe_mapping(model_config, include_top=True):
    """{Keras weight path: ("layer#blob", transform)} for an official Caffe release."""
    return family_mapping("caffe", model_config, include_top)


def resnet_caffe_mapping(config, include_top=True):
    """`caffe_mapping` of the ResNet family: the SKNet and SENet releases' layouts."""
    if config.block == "bottleneck" and config.attention == "sk":
        return _sknet_mapping(config, include_top)
    if config.block == "bottleneck" and config.attention == "se":
        if config.stem_pool != "caffe":
            raise ValueError(
                f"{config.name!r} has the timm layout (symmetric stem pool); the SENet Caffe "
                f"release needs its ceil-mode pool: use {config.name}_caffe"
            )
        return _senet_mapping(config, include_top)
    raise ValueError(
        "Caffe conversion covers the official SKNet release (SK bottleneck units) and the "
        f"SENet release (SE bottleneck units); {config.name!r} is a {config.block} network "
        f"with attention={config.attention!r}"
    )


def _conv_entry(out, path, layer, transform=conv_kernel):
    """Map a Keras conv kernel `path` to blob 0 of Caffe layer `layer`."""
    out[f"{path}/kernel"] = (f"{layer}#0", transform)


def _sknet_mapping(config, include_top):
    out = {}

    def conv(path, layer, transform=conv_kernel):
        _conv_entry(out, path, layer, transform)

    def bn(path, layer):
        for i, name in enumerate(_BN_BLOBS):
            out[f"{path}/{name}"] = (f"{layer}#{i}", flat)

    conv("conv1_conv", "conv1/7x7_s2")
    bn("conv1_bn", "conv1/7x7_s2/bn")
    for unit in units(config):
        c, p = f"conv{unit.stage + 2}_{unit.index + 1}", unit.keras_prefix
        conv(f"{p}_1_conv", f"{c}/1x1_reduce")
        bn(f"{p}_1_bn", f"{c}/1x1_reduce/bn")
        for m, (_, d, g) in enumerate(config.sk.branches):
            g = config.groups if g is None else g
            layer = f"{c}/3x3g{g}" + (f"d{d}" if d > 1 else "")
            conv(f"{p}_2_sk/branch{m}_conv", layer)
            bn(f"{p}_2_sk/branch{m}_bn", f"{layer}/bn")
        conv(f"{p}_2_sk/attn/fuse_conv", f"{c}/B_fc1", pointwise_kernel)
        bn(f"{p}_2_sk/attn/fuse_bn", f"{c}/B_fc1/bn")
        conv(f"{p}_2_sk/attn/select_conv", f"{c}/B_fc2", pointwise_kernel)
        conv(f"{p}_3_conv", f"{c}/1x1_increase")
        bn(f"{p}_3_bn", f"{c}/1x1_increase/bn")
        if unit.has_shortcut_conv:
            conv(f"{p}_0_conv", f"{c}/1x1_proj")
            bn(f"{p}_0_bn", f"{c}/1x1_proj/bn")
    if include_top:
        out["predictions/kernel"] = ("classifier#0", dense_kernel)
        out["predictions/bias"] = ("classifier#1", flat)
    return out


def _senet_mapping(config, include_top):
    out = {}

    def conv_bn(prefix, layer):
        _conv_entry(out, f"{prefix}_conv", layer)
        out[f"{prefix}_bn/gamma"] = (f"{layer}/bn/scale#0", flat)
        out[f"{prefix}_bn/beta"] = (f"{layer}/bn/scale#1", flat)
        out[f"{prefix}_bn/moving_mean"] = (f"{layer}/bn#mean", None)
        out[f"{prefix}_bn/moving_variance"] = (f"{layer}/bn#var", None)

    if config.stem == "deep":
        for i, layer in enumerate(("conv1_1/3x3_s2", "conv1_2/3x3", "conv1_3/3x3"), start=1):
            conv_bn(f"conv1_{i}", layer)
    else:
        conv_bn("conv1", "conv1/7x7_s2")
    for unit in units(config):
        c, p = f"conv{unit.stage + 2}_{unit.index + 1}", unit.keras_prefix
        conv_bn(f"{p}_1", f"{c}_1x1_reduce")
        conv_bn(f"{p}_2", f"{c}_3x3")
        conv_bn(f"{p}_3", f"{c}_1x1_increase")
        for ours, theirs in (("reduce", "down"), ("expand", "up")):
            out[f"{p}_se/{ours}/kernel"] = (f"{c}_1x1_{theirs}#0", pointwise_kernel)
            out[f"{p}_se/{ours}/bias"] = (f"{c}_1x1_{theirs}#1", flat)
        if unit.has_shortcut_conv:
            conv_bn(f"{p}_0", f"{c}_1x1_proj")  # named 1x1 even where it is 3×3 (SENet-154)
    if include_top:
        out["predictions/kernel"] = ("classifier#0", dense_kernel)
        out["predictions/bias"] = ("classifier#1", flat)
    return out


def _is_batch_norm(kind, blobs):
    # Caffe's BatchNorm keeps [mean·f, var·f, f] with a one-element f; the type may be absent.
    return kind == "BatchNorm" or (kind is None and len(blobs) == 3 and blobs[2].size == 1)


def caffemodel_tensors(path):
    """Flatten a caffemodel to {"layer#i": array}, the keys `caffe_mapping` uses.

    A Caffe `BatchNorm` layer becomes {"layer#mean", "layer#var"}: its stored sums divided
    by the moving-average factor, as Caffe does at test time.
    """
    out = {}
    for name, (kind, blobs) in read_caffemodel_layers(path).items():
        if _is_batch_norm(kind, blobs):
            if len(blobs) != 3:
                raise CaffeFormatError(
                    f"{path!r}: BatchNorm layer {name!r} has {len(blobs)} blobs, expected 3"
                )
            factor = float(np.reshape(blobs[2], (-1,))[0])
            factor = 0.0 if factor == 0 else 1.0 / factor
            out[f"{name}#mean"] = flat(blobs[0]) * np.float32(factor)
            out[f"{name}#var"] = flat(blobs[1]) * np.float32(factor)
        else:
            out.update({f"{name}#{i}": blob for i, blob in enumerate(blobs)})
    return out
