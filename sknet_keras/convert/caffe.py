"""Official Caffe release of SKNet (implus/SKNet): read `.caffemodel` files, map blob names.

A `.caffemodel` is a serialized `caffe.NetParameter`. We read the few fields we need
(layer name, blobs, blob shape and data) straight from the protobuf wire format: written by
hand because the alternative is installing Caffe or compiling caffe.proto, and the fields
involved are five. `write_caffemodel` is the inverse, used by tests and for round trips.
"""

import struct

import numpy as np

from sknet_keras.convert.timm import conv_kernel, dense_kernel, pointwise_kernel
from sknet_keras.registry import get_model_config, units

# caffe.proto field numbers.
_NET_LAYER, _NET_V1_LAYERS = 100, 2
_LAYER_NAME, _LAYER_BLOBS = 1, 7
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
    if int(np.prod(shape)) != data.size:
        raise CaffeFormatError(f"blob of shape {shape} holds {data.size} values")
    return data.reshape(shape)


def read_caffemodel(path):
    """{layer name: [blob arrays]} for every layer of a `.caffemodel` that has blobs."""
    with open(path, "rb") as f:
        buf = memoryview(f.read())
    layers = {}
    try:
        for field, wire, value in _fields(buf):
            if wire != 2 or field not in (_NET_LAYER, _NET_V1_LAYERS):
                continue
            name_field, blob_field = ((_LAYER_NAME, _LAYER_BLOBS) if field == _NET_LAYER
                                      else (_V1_NAME, _V1_BLOBS))
            name, blobs = None, []
            for f, w, v in _fields(value):
                if f == name_field and w == 2:
                    name = bytes(v).decode("utf-8")
                elif f == blob_field and w == 2:
                    blobs.append(_blob(v))
            if name is not None and blobs:
                layers[name] = blobs
    except (CaffeFormatError, UnicodeDecodeError) as e:
        raise CaffeFormatError(f"{path!r} is not a readable .caffemodel: {e}") from None
    if not layers:
        raise CaffeFormatError(f"{path!r} is not a .caffemodel (no layer with weights found)")
    return layers


def _key(field, wire):
    return _encode_varint((field << 3) | wire)


def _encode_varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _len_delimited(field, payload):
    return _key(field, 2) + _encode_varint(len(payload)) + payload


def write_caffemodel(path, layers, net_name="net"):
    """Write {layer name: [blob arrays]} as a `.caffemodel` (NetParameter with `layer`)."""
    out = [_len_delimited(1, net_name.encode())]
    for name, blobs in layers.items():
        layer = [_len_delimited(_LAYER_NAME, name.encode())]
        for blob in blobs:
            blob = np.asarray(blob, np.float32)
            dims = b"".join(_encode_varint(int(d)) for d in blob.shape)
            shape = _len_delimited(_SHAPE_DIM, dims)
            layer.append(_len_delimited(_LAYER_BLOBS, _len_delimited(_BLOB_SHAPE, shape)
                                        + _len_delimited(_BLOB_DATA, blob.astype("<f4").tobytes())))
        out.append(_len_delimited(_NET_LAYER, b"".join(layer)))
    with open(path, "wb") as f:
        f.write(b"".join(out))


def flat(w):
    """Caffe BN blobs may be stored (C,) or (1, C, 1, 1)."""
    return np.reshape(w, (-1,))


_BN_BLOBS = ("gamma", "beta", "moving_mean", "moving_variance")  # [scale, bias, mean, var]


def caffe_mapping(model_config, include_top=True):
    """{Keras weight path: ("layer#blob", transform)} for the official SKNet release."""
    config = get_model_config(model_config)
    if config.block != "bottleneck" or config.attention != "sk":
        raise ValueError(
            f"Caffe conversion covers the official SKNet release (bottleneck SK units); "
            f"{config.name!r} is a {config.block} network with attention={config.attention!r}"
        )
    out = {}

    def conv(path, layer, transform=conv_kernel):
        out[f"{path}/kernel"] = (f"{layer}#0", transform)

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
        conv(f"{p}_2_sk/fuse_conv", f"{c}/B_fc1", pointwise_kernel)
        bn(f"{p}_2_sk/fuse_bn", f"{c}/B_fc1/bn")
        conv(f"{p}_2_sk/select_conv", f"{c}/B_fc2", pointwise_kernel)
        conv(f"{p}_3_conv", f"{c}/1x1_increase")
        bn(f"{p}_3_bn", f"{c}/1x1_increase/bn")
        if unit.has_shortcut_conv:
            conv(f"{p}_0_conv", f"{c}/1x1_proj")
            bn(f"{p}_0_bn", f"{c}/1x1_proj/bn")
    if include_top:
        out["predictions/kernel"] = ("classifier#0", dense_kernel)
        out["predictions/bias"] = ("classifier#1", flat)
    return out


def caffemodel_tensors(path):
    """Flatten a caffemodel to {"layer#i": array}, the keys `caffe_mapping` uses."""
    return {f"{name}#{i}": blob for name, blobs in read_caffemodel(path).items()
            for i, blob in enumerate(blobs)}
