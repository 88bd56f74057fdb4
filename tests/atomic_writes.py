"""Each kind of file the package writes, by the package's own writer, in a version (1, 2) its
reader can tell apart (tests/test_atomic_files.py kills the writer at each step).

`KILL_INSIDE`, when set, is called by the kind's writer in the middle of its work: after
part of the temporary is written (the first Python-level write of more than 64 bytes, the
second HDF5 dataset, the SavedModel written but not yet renamed)."""

import builtins
import json
import os

KILL_INSIDE = None
_real_open = builtins.open


def _kill_inside():
    if KILL_INSIDE is not None:
        KILL_INSIDE()


class _HalfWriter:
    """A file object whose first large write goes half to the disk, then `KILL_INSIDE`."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        if KILL_INSIDE is not None and len(data) > 64:
            self._f.write(data[:len(data) // 2])
            self._f.flush()
            _kill_inside()
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _open(file, mode="r", *args, **kwargs):
    f = _real_open(file, mode, *args, **kwargs)
    if isinstance(file, (str, os.PathLike)) and "w" in mode \
            and os.path.basename(os.fspath(file)).startswith(".tmp."):
        return _HalfWriter(f)
    return f


builtins.open = _open


def _h5py_hook():
    import h5py

    real = h5py.Group.create_dataset
    calls = []

    def create_dataset(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            _kill_inside()
        return real(self, *args, **kwargs)

    h5py.Group.create_dataset = create_dataset


def write_run_record(path, version):
    from sknet_keras.trainers import run_files

    run_files.write_json(path, {"version": version, "padding": "x" * 4096})


def read_run_record(path):
    with _real_open(path) as f:
        return json.load(f)["version"]


def write_run_config(path, version):
    from sknet_keras.trainers import configs

    config = configs.recipe("imagenet_senet").override(epochs=version)
    assert configs.write_config(config, os.path.dirname(path)) == path


def read_run_config(path):
    from sknet_keras.trainers import configs

    return configs.load_config_file(path).schedule.epochs


def write_atomic_open(path, version):
    from sknet_keras.atomic_files import atomic_open

    with atomic_open(path) as f:
        json.dump({"version": version, "padding": "x" * 4096}, f)


def write_weights_by_name(path, version):
    import numpy as np

    from sknet_keras.weights.files import write_tensors

    _h5py_hook()
    write_tensors(path, {f"layer{i}/kernel": np.full((64, 64), version, np.float32)
                         for i in range(3)}, "tiny")


def read_weights_by_name(path):
    import numpy as np

    from sknet_keras.weights.files import read_weights

    tensors, _ = read_weights(path)
    assert len(tensors) == 3
    values = {float(v) for t in tensors.values() for v in np.unique(t)}
    assert len(values) == 1, values
    return int(values.pop())


def _tiny_model(version):
    import keras
    import numpy as np

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(64, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden), name="tiny")
    for w in model.weights:
        w.assign(np.full(w.shape, version, "float32"))
    return model


def _version_of(model_weights):
    import numpy as np

    values = {float(v) for w in model_weights for v in np.unique(np.asarray(w))}
    assert len(values) == 1, values
    return int(values.pop())


def write_keras_weights(path, version):
    from sknet_keras.weights.files import save_weights

    _h5py_hook()
    save_weights(_tiny_model(version), path)


def read_keras_weights(path):
    model = _tiny_model(0)
    model.load_weights(path)
    return _version_of(model.get_weights())


def _export(name, path, version):
    from sknet_keras.trainers import exports

    exports.write(_tiny_model(version), os.path.dirname(path), name)


def write_keras_model(path, version):
    _export("keras", path, version)


def read_keras_model(path):
    import keras

    return _version_of(keras.saving.load_model(path).get_weights())


def write_export_folder(path, version):
    import tensorflow as tf

    real = tf.saved_model.save

    def save(*args, **kwargs):
        real(*args, **kwargs)
        _kill_inside()

    tf.saved_model.save = save
    _export("saved_model", path, version)


def read_export_folder(path):
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(path)  # kept: its functions need its variables alive
    served = loaded.serve(np.ones((1, 4), np.float32))
    out = float(np.asarray(served).reshape(-1)[0])
    for version in (1, 2):  # ones through two Dense layers of constant `version`
        if abs(out - (version * (4 * version + version) * 64 + version)) < 1e-3:
            return version
    raise AssertionError(f"the SavedModel gives {out}: neither version")


WRITERS = {"run_record": write_run_record, "run_config": write_run_config,
           "atomic_open": write_atomic_open, "weights_by_name": write_weights_by_name,
           "keras_weights": write_keras_weights, "keras_model": write_keras_model,
           "export_folder": write_export_folder}
READERS = {"run_record": read_run_record, "run_config": read_run_config,
           "atomic_open": read_run_record, "weights_by_name": read_weights_by_name,
           "keras_weights": read_keras_weights, "keras_model": read_keras_model,
           "export_folder": read_export_folder}
