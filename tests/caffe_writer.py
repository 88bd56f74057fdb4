"""Write `.caffemodel` files (NetParameter protobufs) for tests: the inverse of the reader in
`sknet_keras.convert.caffe`, encoding the same few fields by hand."""

import numpy as np

_NET_LAYER = 100
_LAYER_NAME, _LAYER_TYPE, _LAYER_BLOBS = 1, 2, 7
_BLOB_DATA, _BLOB_SHAPE = 5, 7
_SHAPE_DIM = 1


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


def write_caffemodel(path, layers, net_name="net", types=None):
    """Write {layer name: [blob arrays]} as a `.caffemodel` (NetParameter with `layer`);
    `types` optionally gives {layer name: Caffe layer type}."""
    out = [_len_delimited(1, net_name.encode())]
    types = types or {}
    for name, blobs in layers.items():
        layer = [_len_delimited(_LAYER_NAME, name.encode())]
        if name in types:
            layer.append(_len_delimited(_LAYER_TYPE, types[name].encode()))
        for blob in blobs:
            blob = np.asarray(blob, np.float32)
            dims = b"".join(_encode_varint(int(d)) for d in blob.shape)
            shape = _len_delimited(_SHAPE_DIM, dims)
            layer.append(_len_delimited(_LAYER_BLOBS, _len_delimited(_BLOB_SHAPE, shape)
                                        + _len_delimited(_BLOB_DATA, blob.astype("<f4").tobytes())))
        out.append(_len_delimited(_NET_LAYER, b"".join(layer)))
    with open(path, "wb") as f:
        f.write(b"".join(out))


