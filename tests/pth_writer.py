"""Write PyTorch `.pth` files without PyTorch, for tests: both of PyTorch's formats.

The pickles name PyTorch's own globals (`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`,
`collections.OrderedDict`) exactly as `torch.save` writes them, so the reader under test sees
what it would see in a real file. To let Python's pickler emit those names, stand-in modules
`torch` / `torch._utils` are put into `sys.modules` while writing (only when PyTorch is not
installed; with PyTorch the tests write real files with `torch.save` instead).
"""

import collections
import io
import pickle
import struct
import sys
import types
import zipfile
from unittest import mock

import numpy as np

_STORAGE = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
            np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
            np.dtype("int32"): "IntStorage", np.dtype("uint8"): "ByteStorage"}


class _Marker:
    def __init__(self, module, name):
        self.__module__, self.__qualname__, self.__name__ = module, name, name

    def __reduce__(self):
        return self.__qualname__

    def __call__(self, *args):  # the pickler insists that a reduce function be callable
        raise AssertionError("a stand-in is never called")


def _fake_torch():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    utils._rebuild_tensor_v2 = _Marker("torch._utils", "_rebuild_tensor_v2")
    for name in _STORAGE.values():
        setattr(torch, name, _Marker("torch", name))
    torch._utils = utils
    return {"torch": torch, "torch._utils": utils}


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, np.ascontiguousarray(array).reshape(-1)


class _Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce__(self):
        strides, step = [], 1
        for n in reversed(self.shape):
            strides.insert(0, step)
            step *= n
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, 0, self.shape, tuple(strides), False,
                         collections.OrderedDict())


class _Pickler(pickle._Pickler):
    def __init__(self, file, legacy):
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        storage_type = getattr(sys.modules["torch"], _STORAGE[obj.array.dtype])
        pid = ("storage", storage_type, obj.key, "cpu", obj.array.size)
        return pid + (None,) if self.legacy else pid


def _state(tensors):
    storages = {str(i): _Storage(str(i), v) for i, v in enumerate(tensors.values())}
    state = collections.OrderedDict(
        (k, _Tensor(storages[str(i)], np.shape(v))) for i, (k, v) in enumerate(tensors.items()))
    return state, storages


def write_pth(path, tensors, legacy=False, wrap=None, extra=None):
    """Write {key: array} as a state_dict (`wrap`: inside {wrap: state_dict}); `extra` is
    pickled beside it, to plant anything a hostile file could hold."""
    state, storages = _state(tensors)
    obj = {wrap: state} if wrap else state
    if extra is not None:
        obj = {"state_dict": state, "extra": extra}
    modules = {} if "torch" in sys.modules else _fake_torch()
    with mock.patch.dict(sys.modules, modules):
        buf = io.BytesIO()
        _Pickler(buf, legacy).dump(obj)
    if legacy:
        with open(path, "wb") as f:
            for header in (0x1950A86A20F9469CFC6C, 1001,
                           {"protocol_version": 1001, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                pickle.dump(header, f, protocol=2)
            f.write(buf.getvalue())
            pickle.dump(list(storages), f, protocol=2)
            for storage in storages.values():
                f.write(struct.pack("<q", storage.array.size))
                f.write(storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes())
        return path
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buf.getvalue())
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, storage in storages.items():
            archive.writestr(f"archive/data/{key}", storage.array.tobytes())
    return path
