"""A run's exports (`--export`): each written under a temporary name and renamed into
place, so that it is complete or absent, never half written under its final name."""

import errno
import os

from sknet_keras.atomic_files import atomic_path
from sknet_keras.trainers import run_files
from sknet_keras.trainers.configs import EXPORT_FILES
from sknet_keras.weights.files import save_weights


def _network(fmt):
    return lambda model, path, model_dir: model.export(path, format=fmt, verbose=False)


def _served(fmt):
    """A deployment file exactly as `python -m sknet_keras.export --weights=RUN` writes it
    (`serving.export`: images in [0, 255] with the run's preprocessing in the graph, the
    float32 network of the run's weights, served and checked against Keras)."""
    def write(model, path, model_dir):
        from sknet_keras.trainers import serving
        from sknet_keras.trainers.model_source import resolve

        source = resolve(weights=model_dir, note=lambda text: None)  # its last checkpoint
        serving.export(source, fmt, path[:len(path) - len(serving.FORMATS[fmt])])

    return write


# --export's names: (file or folder in model_dir, writer). The network as it trains, for
# Keras and TensorFlow (normalized images in, logits out): final.weights.h5 (Keras' own
# format, carrying the registry network of the model's name so that weights=PATH reads it by
# name), final.keras, the SavedModel. The deployment files, LiteRT and ONNX, serve images.
_WRITERS = {
    "weights": lambda model, path, model_dir: save_weights(model, path),
    "keras": lambda model, path, model_dir: model.save(path),
    "saved_model": _network("tf_saved_model"),
    "litert": _served("litert"),
    "onnx": _served("onnx"),
}
EXPORTS = {name: (EXPORT_FILES[name], _WRITERS[name]) for name in EXPORT_FILES}


def write(model, model_dir, name):
    """Write export `name` of `model` into `model_dir`; returns its record (size, SHA-256).
    A full disk raises OSError(ENOSPC) in one line and leaves no partial file."""
    file_name, writer = EXPORTS[name]
    path = os.path.join(model_dir, file_name)
    try:
        with atomic_path(path) as tmp:
            writer(model, tmp, model_dir)
    except BaseException as e:
        if run_files.is_disk_full(e):
            raise OSError(errno.ENOSPC, f"the disk is full: could not write {path}") from None
        raise
    return run_files.record(path)
