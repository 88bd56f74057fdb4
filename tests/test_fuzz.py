"""Every file reader of the package, fed damaged and hostile files: a clear error naming the
file, in bounded memory and time; nothing executed, no crash, no hang.

Deterministic (seeded) mutations of small valid files (truncations, bit flips, a wrong
header, a repeated chunk) and crafted hostile ones (huge declared sizes, a decompression
bomb, deep nesting) go through each reader in one child process whose address space is
capped (RLIMIT_AS) and whose every read has an alarm. The counts per reader are printed.
"""

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from unittest import mock

import numpy as np
import pytest

import pth_writer
from caffe_writer import _encode_varint, _len_delimited, write_caffemodel
from pth_writer import write_pth

pytestmark = pytest.mark.large

MUTATIONS = 60  # per valid file
MEMORY_LIMIT = 6 << 30  # address space of the child (Python, NumPy, Keras on NumPy, h5py)
SECONDS_PER_READ = 20

READERS = {
    "pth": "sknet_keras.convert.pth:read_pth",
    "safetensors": "sknet_keras.convert.timm:read_timm_checkpoint",
    "caffemodel": "sknet_keras.convert.caffe:read_caffemodel",
    "sknet_weights": "sknet_keras.weights.files:read_weights",
    "keras_weights": "keras_weights",  # weights= of a Keras .weights.h5 (files.load_weights)
    "run_config": "run_config",  # a run's config.json (configs.read_config)
}

_CHILD = r"""
import importlib, json, os, resource, signal, sys, traceback
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
import keras
from sknet_keras.weights.files import load_weights
from sknet_keras.trainers.configs import read_config

def reader(spec):
    if spec == "keras_weights":
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
        return lambda path: load_weights(model, path)
    if spec == "run_config":
        return lambda path: read_config(os.path.dirname(path))
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)

def alarm(*_):
    raise TimeoutError("read took too long")

signal.signal(signal.SIGALRM, alarm)
out = []
for spec, path in json.load(open(sys.argv[1])):
    signal.alarm({seconds})
    try:
        reader(spec)(path)
        outcome = ["ok", ""]
    except BaseException as e:
        outcome = [type(e).__name__, str(e)[:400]]
        if not isinstance(e, ValueError):
            outcome[1] += " | " + "".join(traceback.format_exception(e))[-600:]
    signal.alarm(0)
    out.append(outcome)
print("OUTCOMES" + json.dumps(out))
"""


def _valid_files(folder):
    rng = np.random.default_rng(0)
    tensors = {"conv1.weight": rng.normal(size=(8, 3, 3, 3)).astype("float32"),
               "bn1.running_mean": rng.normal(size=(8,)).astype("float32"),
               "fc.bias": rng.normal(size=(5,)).astype("float32")}
    files = {}
    files["pth", "zip"] = write_pth(str(folder / "zip.pth"), tensors)
    files["pth", "legacy"] = write_pth(str(folder / "legacy.pth"), tensors, legacy=True)
    from safetensors.numpy import save_file

    files["safetensors", ""] = str(folder / "model.safetensors")
    save_file(tensors, files["safetensors", ""])
    files["caffemodel", ""] = str(folder / "model.caffemodel")
    write_caffemodel(files["caffemodel", ""], {"conv1": [tensors["conv1.weight"]],
                                               "fc": [tensors["fc.bias"]]})
    from sknet_keras.weights.files import write_tensors

    files["sknet_weights", ""] = str(folder / "final.weights.h5")
    write_tensors(files["sknet_weights", ""], {"conv1/kernel": tensors["conv1.weight"],
                                               "predictions/bias": tensors["fc.bias"]}, "m")
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    files["keras_weights", ""] = str(folder / "model.weights.h5")
    model.save_weights(files["keras_weights", ""])
    from sknet_keras.trainers.configs import ExperimentConfig, write_config

    (folder / "run").mkdir()
    files["run_config", ""] = write_config(ExperimentConfig(), str(folder / "run"))
    return files


def _mutations(data, rng):
    """(kind, bytes) mutations of one valid file."""
    n = len(data)
    for i in range(MUTATIONS):
        kind = ("truncated", "bit flips", "wrong header", "repeated chunk")[i % 4]
        b = bytearray(data)
        if kind == "truncated":
            b = b[:int(rng.integers(0, n))]
        elif kind == "bit flips":
            for pos in rng.integers(0, n, int(rng.integers(1, 9))):
                b[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == "wrong header":
            b[:16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        else:
            start = int(rng.integers(0, n))
            b[start:start] = b[start:start + int(rng.integers(1, 64))]
        yield kind, bytes(b)


class _View(pth_writer._Tensor):
    """A tensor pickled with the size and stride given (pth_writer's are contiguous)."""

    def __init__(self, storage, shape, stride):
        super().__init__(storage, shape)
        self.stride = tuple(stride)

    def __reduce__(self):
        rebuild, args = super().__reduce__()
        return rebuild, args[:3] + (self.stride,) + args[4:]


def _pickled(obj):
    modules = {} if "torch" in sys.modules else pth_writer._fake_torch()
    with mock.patch.dict(sys.modules, modules):
        buf = io.BytesIO()
        pth_writer._Pickler(buf, False).dump(obj)
    return buf.getvalue()


def _write_zip_pth(path, pickled, storages, compress=False):
    kind = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=kind, compresslevel=1 if compress else None) \
            as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        for key, write in storages.items():
            with archive.open(f"archive/data/{key}", "w", force_zip64=True) as member:
                write(member)
    return path


def _hostile_files(folder):
    """(reader, label, path) of crafted files each reader must refuse."""
    out = []
    three = pth_writer._Storage("0", np.zeros(3, "float32"))
    # PyTorch: a tensor of 2^60 elements over a 3-element storage (stride 0: every index in
    # bounds, so only its size gives it away).
    path = _write_zip_pth(str(folder / "huge_view.pth"),
                          _pickled({"w": _View(three, (1 << 30, 1 << 30), (0, 0))}),
                          {"0": lambda m: m.write(three.array.tobytes())})
    out.append(("pth", "a 2^60-element view of 3 floats", path))
    # PyTorch zip: a decompression bomb (a 1.5 GiB storage in a few MB).
    big = pth_writer._Storage("0", np.zeros(3, "float32"))

    def bomb(member):
        chunk = bytes(64 << 20)
        for _ in range(24):
            member.write(chunk)

    path = _write_zip_pth(str(folder / "bomb.pth"), _pickled({"w": _View(big, (3,), (1,))}),
                          {"0": bomb}, compress=True)
    out.append(("pth", "a decompression bomb", path))
    # Legacy PyTorch: a storage that declares 2^40 elements.
    path = write_pth(str(folder / "huge_legacy.pth"), {"w": np.zeros(3, "float32")},
                     legacy=True)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-20] + struct.pack("<q", 1 << 40) + data[-12:])
    out.append(("pth", "a legacy storage of 2^40 elements", path))
    # A pickle nested 100 000 lists deep.
    path = str(folder / "deep.pth")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + b"(" * 100_000 + b"l" * 100_000 + b".")
    out.append(("pth", "a pickle nested 100 000 deep", path))
    # safetensors: a header that declares 2^40 bytes.
    path = str(folder / "huge_header.safetensors")
    open(path, "wb").write(struct.pack("<Q", 1 << 40) + b"{}")
    out.append(("safetensors", "a 2^40-byte header", path))
    # caffemodel: a field that declares 2^62 bytes; a blob that declares 2^64 values.
    path = str(folder / "length_bomb.caffemodel")
    open(path, "wb").write(_len_delimited(1, b"net")[:1] + b"\xff" * 8 + b"\x3f" + bytes(16))
    out.append(("caffemodel", "a 2^62-byte field", path))
    path = str(folder / "huge_blob.caffemodel")
    shape = _len_delimited(1, _encode_varint(1 << 32) * 2)  # BlobShape{dim: [2^32, 2^32]}
    layer = _len_delimited(1, b"conv1") + _len_delimited(7, _len_delimited(7, shape))
    open(path, "wb").write(_len_delimited(1, b"net") + _len_delimited(100, layer))
    out.append(("caffemodel", "a blob of 2^64 declared values", path))
    # HDF5 weights: a dataset of 2^36 floats that holds no data (fill value: a small file).
    import h5py

    path = str(folder / "huge_dataset.weights.h5")
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "sknet_keras.weights.v1"
        f.create_dataset("conv1/kernel", shape=(1 << 36,), dtype="f4", chunks=(1 << 16,))
    out.append(("sknet_weights", "a 2^36-float dataset in a small file", path))
    # config.json nested 100 000 deep.
    (folder / "deep_run").mkdir()
    path = str(folder / "deep_run" / "config.json")
    open(path, "w").write("[" * 100_000 + "]" * 100_000)
    out.append(("run_config", "JSON nested 100 000 deep", path))
    return out


def test_every_reader_refuses_damaged_and_hostile_files_clearly(tmp_path):
    rng = np.random.default_rng(22)
    cases, labels = [], []
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for (reader, variant), path in _valid_files(tmp_path).items():
        cases.append((READERS[reader], path))
        labels.append((reader, "the valid file", path, True))
        data = open(path, "rb").read()
        for i, (kind, mutated) in enumerate(_mutations(data, rng)):
            folder = damaged / f"{reader}{variant}{i}"
            folder.mkdir()
            target = str(folder / os.path.basename(path))
            open(target, "wb").write(mutated)
            cases.append((READERS[reader], target))
            labels.append((reader, kind, target, None))
    for reader, label, path in _hostile_files(tmp_path):
        cases.append((READERS[reader], path))
        labels.append((reader, label, path, False))
    case_file = tmp_path / "cases.json"
    case_file.write_text(json.dumps(cases))
    env = dict(os.environ, KERAS_BACKEND="numpy")
    code = _CHILD.format(limit=MEMORY_LIMIT, seconds=SECONDS_PER_READ)
    proc = subprocess.run([sys.executable, "-c", code, str(case_file)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"the reader process died ({proc.returncode}):\n" \
                                 f"{proc.stderr[-3000:]}"
    outcomes = json.loads(proc.stdout.split("OUTCOMES", 1)[1])
    counts, problems = {}, []
    for (reader, kind, path, must_read), (error, message) in zip(labels, outcomes):
        count = counts.setdefault(reader, {"files": 0, "refused": 0})
        count["files"] += 1
        count["refused"] += error != "ok"
        if must_read is True and error != "ok":
            problems.append(f"{reader}, {kind}: the valid file fails: {error}: {message}")
        elif must_read is False and error == "ok":
            problems.append(f"{reader}, {kind}: read without a word")
        elif error != "ok" and error not in ("ValueError",) and not error.endswith("Error"):
            problems.append(f"{reader}, {kind}: {error}: {message}")
        elif error != "ok" and not _is_clear(error, message, path):
            problems.append(f"{reader}, {kind}: {error}: {message}")
    print("files read per reader (refused):", json.dumps(counts))
    assert not problems, "\n".join(problems[:20]) + f"\n({len(problems)} in all)"


def _is_clear(error, message, path):
    """A ValueError (the package's user-error type) naming the file, in one line."""
    from sknet_keras.convert.caffe import CaffeFormatError
    from sknet_keras.convert.pth import UnsafePickleError

    allowed = {"ValueError", "ConfigError", CaffeFormatError.__name__,
               UnsafePickleError.__name__}
    return (error in allowed and (os.path.basename(path) in message or path in message)
            and "|" not in message)


# --- images of an image folder ----------------------------------------------------------------

IMAGE_MEMORY_LIMIT = 12 << 30  # TensorFlow's address space is larger than its use

_IMAGE_CHILD = r"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
import tensorflow as tf
from sknet_keras.trainers import datasets, pipeline
from sknet_keras.trainers.configs import recipe
spec = datasets.load_spec("image_folder", sys.argv[1])
data = recipe("imagenet_senet", "image_folder").override(image_size=32).data
out = {{}}
for split, training in (("train", True), ("validation", False)):
    counter = pipeline.BadImageCounter()
    ds = pipeline.make_dataset(spec, split, data, 1, training, counter=counter)
    read = sum(1 if training else int(batch[2].numpy()[0]) for batch in ds)
    out[split] = [read, counter.count]
print("COUNTS" + json.dumps(out))
"""


def _png(width, height, rows=None):
    """A PNG (RGB, 8 bits) of `rows` (bytes per row, filter byte first) or zeros."""
    import zlib

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))

    raw = rows if rows is not None else bytes(height * (1 + 3 * width))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _jpeg_declaring(data, height, width):
    """`data` (a JPEG) with its frame header (SOF0) declaring height × width."""
    b = bytearray(data)
    at = b.index(b"\xff\xc0") + 5  # marker, length (2), precision (1), then height, width
    b[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(b)


def _hostile_images(rng):
    import tensorflow as tf

    jpeg = tf.io.encode_jpeg(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).numpy()
    return [
        ("a JPEG declaring 65 000 x 65 000 pixels", "huge.jpg",
         _jpeg_declaring(jpeg, 65000, 65000)),
        ("a PNG declaring 100 000 x 100 000 pixels", "huge_header.png",
         _png(100_000, 100_000, rows=bytes(3 * 100_000 + 1))),
        ("a PNG bomb: 20 000 x 20 000 zeros in a few hundred kB", "bomb.png",
         _png(20_000, 20_000)),
        ("a GIF named .jpg, declaring 65 535 x 65 535", "gif.jpg",
         b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b"\x2c"
         + bytes(8) + b"\x00\x02\x02\x44\x01\x00\x3b"),
        ("a BMP named .png, declaring 60 000 x 60 000", "bmp.png",
         b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack(
             "<IiiHHIIiiII", 40, 60000, 60000, 1, 24, 0, 0, 0, 0, 0, 0)),
    ]


def test_image_folder_images_damaged_or_hostile_are_named_and_skipped(tmp_path):
    """60 mutations each of a JPEG and a PNG, and crafted ones (huge declared sizes, a PNG
    decompression bomb, other formats under a .jpg / .png name), through the trainer's real
    image-folder pipeline (training crops and evaluation decoding), in a child whose
    address space is capped: every image is read or named and skipped, nothing crashes."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    valid = {"jpg": tf.io.encode_jpeg(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
             .numpy(),
             "png": tf.io.encode_png(rng.integers(0, 255, (36, 30, 3), dtype=np.uint8))
             .numpy()}
    files = [(f"valid{i}.{ext}", data) for ext, data in valid.items() for i in range(2)]
    for ext, data in valid.items():
        files += [(f"{ext}_{i}_{kind.replace(' ', '_')}.{ext}", mutated)
                  for i, (kind, mutated) in enumerate(_mutations(data, rng))]
    hostile = _hostile_images(rng)
    files += [(name, data) for _, name, data in hostile]
    root = tmp_path / "folder"
    for split in ("train", "validation"):
        for i, (name, data) in enumerate(files):
            folder = root / split / ("cat", "dog")[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
    code = _IMAGE_CHILD.format(limit=IMAGE_MEMORY_LIMIT)
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                          text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, f"the pipeline's process died ({proc.returncode}):\n" \
                                 f"{proc.stderr[-3000:]}"
    counts = json.loads(proc.stdout.split("COUNTS", 1)[1])
    named = {line.rsplit("/", 1)[-1].strip("\"' ") for line in proc.stderr.splitlines()
             if "corrupt or undecodable image:" in line}
    print(f"image folder: {len(files)} files per split, "
          f"{ {s: dict(read=r, skipped=k) for s, (r, k) in counts.items()} }")
    for split, (read, skipped) in counts.items():
        assert read + skipped == len(files), (split, read, skipped)
    lines = [line for line in proc.stderr.splitlines() if "corrupt or undecodable" in line]
    assert len(lines) == sum(k for _, k in counts.values())  # one line per image skipped
    assert all(line.startswith("skipping corrupt or undecodable image: /") for line in lines)
    for _, name, _ in hostile:
        assert name in named, (name, proc.stderr[-2000:])
    assert not {f"valid{i}.{ext}" for ext in valid for i in range(2)} & named
