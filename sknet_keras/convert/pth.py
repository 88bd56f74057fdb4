"""Read PyTorch `.pth` / `.pth.tar` state_dicts into NumPy, without PyTorch and without
running anything the file asks for.

Written by hand because `torch.load(weights_only=True)` needs PyTorch (gigabytes) for what
is a pickle of tensors, and a plain `pickle.load` runs whatever code the file names. Here the
unpickler resolves only the handful of globals a state_dict needs — the tensor rebuild
functions, storage types, `OrderedDict` — to harmless stand-ins that build NumPy arrays;
any other global (`os.system`, `builtins.eval`, a model class, `argparse.Namespace`, ...)
stops the read with an error naming it, before anything is called.

Both of PyTorch's formats are read: the zip archive of PyTorch >= 1.6 (`archive/data.pkl`
plus one file per storage) and the legacy format of older releases (timm's 2019
`v0.1-weights` files): pickled magic number, protocol and system info, the object pickle,
the storage keys, then each storage's raw bytes preceded by its element count.
"""

import collections
import io
import math
import os
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class UnsafePickleError(ValueError):
    """The file asks for something a state_dict does not contain; nothing was executed."""


def _bfloat16():
    import ml_dtypes  # ships with TensorFlow and JAX

    return ml_dtypes.bfloat16


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stand-in for `torch.FloatStorage` & co.: only names a dtype; not callable."""

    def __init__(self, name):
        dtype = _STORAGE_DTYPES[name]
        self.dtype = np.dtype(_bfloat16() if dtype == "bfloat16" else dtype)


class _Storage:
    """A storage's bytes, read lazily from the archive (or the legacy stream)."""

    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.array = dtype, int(numel), None


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """NumPy copy of a strided view of `storage`, with every index checked in bounds."""
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("a tensor is rebuilt from something that is not a storage")
    size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise UnsafePickleError(f"invalid tensor layout: size {size}, stride {stride}")
    return _Tensor(storage, offset, size, stride)


class _Tensor:
    """A tensor whose storage bytes may not be read yet (zip: on demand; legacy: later)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def numpy(self):
        data = self.storage.array
        if data is None:
            raise UnsafePickleError("a tensor refers to a storage the file does not contain")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, data.dtype)
        if math.prod(self.size) > data.size:  # overlapping strides: no state_dict has them
            raise UnsafePickleError(
                f"a tensor of size {self.size} declares more elements than its storage of "
                f"{data.size}: refused (a crafted size, or a damaged file)")
        if last >= data.size:
            raise UnsafePickleError(
                f"tensor of size {self.size} runs past its storage of {data.size} elements")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * item for s in self.stride],
            writeable=False)
        return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, backward_hooks, dtype,
                       *unused):
    return _rebuild_tensor(storage, offset, size, stride)


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


def _load_build(unpickler):
    """BUILD only as a state_dict uses it: an OrderedDict's `_metadata` attribute. (The
    general BUILD can set attributes on any object the pickle reaches, classes included.)"""
    state = unpickler.stack.pop()
    inst = unpickler.stack[-1]
    if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
        state = state[0]
    if type(inst) is not collections.OrderedDict or not isinstance(state, dict):
        raise UnsafePickleError(
            f"{unpickler._path!r} sets the state of a {type(inst).__name__}, which a PyTorch "
            "state_dict does not do: refused, nothing was executed")
    inst.__dict__.update(state)


class _Unpickler(pickle._Unpickler):
    """Python's own unpickler (the pure-Python one, so that BUILD can be restricted too)."""

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build

    def __init__(self, file, path, storages):
        super().__init__(file, encoding="latin1")
        self._path, self._storages = path, storages

    def find_class(self, module, name):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path!r} asks for the global '{module}.{name}', which a PyTorch "
                "state_dict does not contain: refused, nothing was executed (only tensors, "
                "storages and OrderedDict are read)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"{self._path!r}: unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type.dtype, numel)
        storage = self._storages[key]
        if view is not None:  # legacy storage views: (view key, offset, size)
            _, view_offset, view_size = view
            return _StorageView(storage, int(view_offset), int(view_size))
        return storage


class _StorageView(_Storage):
    def __init__(self, base, offset, numel):
        super().__init__(base.dtype, numel)
        self.base, self.view_offset = base, offset

    @property
    def array(self):
        if self.base.array is None:
            return None
        return self.base.array[self.view_offset:self.view_offset + self.numel]

    @array.setter
    def array(self, value):
        pass


def _safe_load(unpickler):
    try:
        return unpickler.load()
    except UnsafePickleError:
        raise
    except Exception as e:  # malformed pickles raise many types
        raise ValueError(f"{unpickler._path!r} is not a readable PyTorch checkpoint "
                         f"({type(e).__name__}: {e})") from None


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path!r} is a zip file but not a PyTorch checkpoint "
                             f"(no single data.pkl inside)")
        prefix = pickles[0][:-len("data.pkl")]
        order = prefix + "byteorder"
        if order in names and archive.read(order).strip() not in (b"little", b""):
            raise ValueError(f"{path!r} was written on a big-endian machine: not supported")
        storages = {}
        obj = _safe_load(_Unpickler(io.BytesIO(_read_member(archive, pickles[0], path)), path,
                                    storages))
        for key, storage in storages.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise ValueError(f"{path!r} is not a complete PyTorch checkpoint (storage {key} "
                                 "is missing)")
            raw = _read_member(archive, member, path)
            storage.array = np.frombuffer(raw, storage.dtype, count=len(raw) //
                                          storage.dtype.itemsize)
    return obj


# PyTorch stores its members uncompressed; a member that expands more than this is a
# decompression bomb, refused before it is expanded.
_MAX_EXPANSION = 20


def _read_member(archive, name, path):
    info = archive.getinfo(name)
    if (info.compress_type != zipfile.ZIP_STORED
            and info.file_size > _MAX_EXPANSION * max(info.compress_size, 1) + (1 << 20)):
        raise ValueError(f"{path!r}: member {name} would expand from {info.compress_size} to "
                         f"{info.file_size} bytes (a decompression bomb?): refused")
    return archive.read(name)


def _read_legacy(path):
    with open(path, "rb") as f:
        def load(storages=None):
            return _safe_load(_Unpickler(f, path, {} if storages is None else storages))

        magic = load()
        if magic != LEGACY_MAGIC:
            raise ValueError(f"{path!r} is not a PyTorch checkpoint (no magic number)")
        if load() != LEGACY_PROTOCOL:
            raise ValueError(f"{path!r}: unsupported legacy PyTorch protocol")
        load()  # system info: byte order and type sizes
        storages = {}
        obj = load(storages)
        keys = load()
        size = os.path.getsize(path)
        for key in keys if isinstance(keys, list) else ():
            storage = storages.get(str(key))
            header = f.read(8)
            if storage is None or len(header) != 8:
                raise ValueError(f"{path!r} is truncated or damaged (storage {key})")
            (numel,) = struct.unpack("<q", header)
            nbytes = numel * storage.dtype.itemsize
            if numel < 0 or nbytes > size - f.tell():  # before reading: no huge allocation
                raise ValueError(f"{path!r} is truncated or damaged (storage {key} declares "
                                 f"{numel} elements)")
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"{path!r} is truncated (storage {key})")
            storage.array = np.frombuffer(raw, storage.dtype)
    return obj


def _to_arrays(obj, path):
    """The state_dict inside `obj` (a checkpoint may wrap it) as {key: ndarray}."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} does not hold a state_dict (found {type(obj).__name__})")
    out = {}
    for key, value in obj.items():
        if isinstance(value, _Tensor):
            name = key[len("module."):] if key.startswith("module.") else key
            out[name] = value.numpy()
    if not out:
        raise ValueError(f"{path!r} holds no tensors")
    return out


def read_pth(path):
    """{key: ndarray} of the state_dict in a `.pth` / `.pth.tar` / `.bin` file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"file not found: {path!r}")
    try:
        if zipfile.is_zipfile(path):
            obj = _read_zip(path)
        else:
            with open(path, "rb") as f:
                if f.read(262)[257:262] == b"ustar":
                    raise ValueError(f"{path!r} is PyTorch's pre-0.4 tar format: load it with "
                                     "PyTorch and save it again")
            obj = _read_legacy(path)
        return _to_arrays(obj, path)
    except ValueError as e:
        if path in str(e):
            raise
        raise ValueError(f"{path!r} is not a readable PyTorch checkpoint: {e}") from None
    except Exception as e:  # a damaged zip or stream raises many types (CRC, zlib, EOF ...)
        raise ValueError(f"{path!r} is not a readable PyTorch checkpoint ({type(e).__name__}: "
                         f"{e})") from None
