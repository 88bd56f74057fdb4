"""A run's exports (`--export`): each written under a temporary name and renamed into
place, so that it is complete or absent, never half written under its final name."""

import errno
import os

from sknet_keras.atomic_files import atomic_path
from sknet_keras.trainers import run_files
from sknet_keras.trainers.configs import EXPORT_FILES
from sknet_keras.weights.files import save_weights


def _exporter(fmt):
    return lambda model, path: model.export(path, format=fmt, verbose=False)


# --export's names: (file or folder in model_dir, writer). final.weights.h5 is Keras' own
# format, carrying the registry network of the model's name so that weights=PATH reads it by
# name (`save_weights`); the SavedModel / LiteRT / ONNX files take normalized images and give
# logits (Keras' `model.export`).
_WRITERS = {
    "weights": save_weights,
    "keras": lambda model, path: model.save(path),
    "saved_model": _exporter("tf_saved_model"),
    "litert": _exporter("litert"),
    "onnx": _exporter("onnx"),
}
EXPORTS = {name: (EXPORT_FILES[name], _WRITERS[name]) for name in EXPORT_FILES}


def write(model, model_dir, name):
    """Write export `name` of `model` into `model_dir`; returns its record (size, SHA-256).
    A full disk raises OSError(ENOSPC) in one line and leaves no partial file."""
    file_name, writer = EXPORTS[name]
    path = os.path.join(model_dir, file_name)
    try:
        with atomic_path(path) as tmp:
            writer(model, tmp)
    except BaseException as e:
        if run_files.is_disk_full(e):
            raise OSError(errno.ENOSPC, f"the disk is full: could not write {path}") from None
        raise
    return run_files.record(path)
