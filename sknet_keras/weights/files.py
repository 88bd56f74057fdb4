"""Weight files, and loading with errors that name the problem.

Two formats, both read by name (Keras variable path, `conv2_block1_2_sk/branch0_conv/kernel`):
- **`.weights.h5`: Keras' own format** (`model.save_weights`), which `model.load_weights`
  reads into the same architecture. The files this package writes (a run's
  `final.weights.h5`, a converter's output named so) also carry the network's config and
  classifier size as HDF5 attributes, so `weights=PATH` rebuilds that network, reads the
  file through Keras and then takes the tensors by name: into `include_top=False`, or with
  a new classifier (fine-tuning).
- **Any other suffix (`.sknet.h5`): the by-name format**, one dataset per variable path and a
  `format` attribute (what the converters and the ImageNet cache write; files of earlier
  versions, under `.weights.h5` too, keep loading).
Everything is checked before anything is assigned: missing, unexpected or wrongly shaped
tensors are listed in one error and the model is left untouched. Keras files without our
attributes load through Keras, whose loader only *warns* when it skips layers; we turn
that into an error and roll back.
"""

import difflib
import json
import os
import re
import warnings

import h5py
import numpy as np

from sknet_keras.atomic_files import atomic_path

FORMAT = "sknet_keras.weights.v1"
KERAS_SUFFIX = ".weights.h5"
# Root attribute of our Keras-format files: {"family", "config", "classes"} as JSON.
NETWORK_ATTR = "sknet_keras_network"
HEAD_PREFIXES = ("predictions/",)


def write_tensors(path, tensors, model_name="", **metadata):
    """Write {variable path: array} in our format, atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["model"] = model_name
        for key, value in metadata.items():
            f.attrs[key] = value
        for name, value in tensors.items():
            f.create_dataset(name, data=np.asarray(value))


def save_weights(model, path, config=None, **metadata):
    """Write every variable of `model`: Keras' own format when `path` ends in `.weights.h5`
    (with `config`, the family config `model` was built from, as an attribute, so that it
    reads by name too; default: the registry's network of the model's name), else the
    by-name format (`write_tensors`). Atomic."""
    path = os.fspath(path)
    if not path.endswith(KERAS_SUFFIX):
        write_tensors(path, {w.path: np.asarray(w.numpy()) for w in model.weights},
                      model.name, **metadata)
        return
    from sknet_keras.models.serialization import config_to_dict
    from sknet_keras.registry import ENTRIES

    if config is None and model.name in ENTRIES:  # built by name: the registry's network
        config = ENTRIES[model.name].config
    with atomic_path(path) as tmp:  # keeps the suffix, which Keras checks
        model.save_weights(tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs["model"] = model.name
            if config is not None:
                f.attrs[NETWORK_ATTR] = json.dumps({
                    "family": config.family, "config": config_to_dict(config),
                    "classes": _classes(model)})
            for key, value in metadata.items():
                f.attrs[key] = value


def _classes(model):
    """The classifier's size, or None without the top."""
    try:
        return int(model.get_layer("predictions").units)
    except ValueError:
        return None


def _network_of(f):
    text = f.attrs.get(NETWORK_ATTR)
    return json.loads(text) if text is not None else None


def model_name_of(path):
    """The model name a weights file of ours records, or None (not ours, or unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            name = f.attrs.get("model")
    except Exception:  # not HDF5, or damaged: the loader names the problem later
        return None
    name = name.decode() if isinstance(name, bytes) else name
    return str(name) if name else None


def is_sknet_weights_file(path):
    """Whether `path` can be read by name: the by-name format, or a Keras file with our
    network attribute."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT or NETWORK_ATTR in f.attrs
    except Exception:  # not HDF5, or a damaged header: not ours (Keras' loader says why)
        return False


# Files written before the SK attention became its own layer (`…_sk/attn/…`).
_LEGACY_SK_ATTENTION = re.compile(r"(_sk)/(fuse_conv|fuse_bn|select_conv)/")


def upgrade_legacy_paths(tensors):
    """Rename the variable paths of files written by earlier versions to today's."""
    return {_LEGACY_SK_ATTENTION.sub(r"\1/attn/\2/", k): v for k, v in tensors.items()}


def read_weights(path):
    """{variable path: array} and the file's attributes; ValueError naming the file if it is
    damaged. Nothing larger than the file is allocated: the format is uncompressed, so a
    tensor that declares more bytes than the file holds is refused before it is read."""
    path = os.fspath(path)
    tensors, size = {}, os.path.getsize(path)
    try:
        with h5py.File(path, "r") as f:
            network, attrs = _network_of(f), dict(f.attrs)
    except Exception as e:  # h5py raises OSError, KeyError, RuntimeError, TypeError ...
        raise ValueError(f"{path!r} is not a readable weights file ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None
    if network is not None:
        return _read_keras_file(path, network), attrs
    try:
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    if obj.size * obj.dtype.itemsize > size:
                        raise ValueError(f"tensor {name} declares {obj.shape} "
                                         f"{obj.dtype} values, more than the file holds")
                    tensors[name] = obj[()]

            f.visititems(visit)
            attrs = dict(f.attrs)
    except Exception as e:  # h5py raises OSError, KeyError, RuntimeError, TypeError ...
        raise ValueError(f"{path!r} is not a readable weights file ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None
    return upgrade_legacy_paths(tensors), attrs


def _read_keras_file(path, network):
    """{variable path: array} of a Keras-format file of ours: its network rebuilt from the
    attribute, loaded by Keras (which checks every layer), read by name."""
    import keras

    from sknet_keras.models import CONFIG_CLASSES
    from sknet_keras.models.network import build_network
    from sknet_keras.models.serialization import config_from_dict

    def build():
        return build_network(config, keras.Input((config.default_size,) * 2 + (3,)),
                             include_top=network["classes"] is not None,
                             classes=network["classes"] or 1, classifier_activation=None)

    try:
        config = config_from_dict(CONFIG_CLASSES[network["family"]], network["config"])
        # The network the attribute describes, without allocating its variables (a hostile
        # attribute can describe a network of any size): it must be the file's size.
        with keras.StatelessScope(initialize_variables=False):
            needed = sum(int(np.prod(w.shape)) for w in build().weights)
        held = _values_in(path)
        if needed != held:
            raise ValueError(f"{path!r}: its {NETWORK_ATTR} attribute describes a network of "
                             f"{needed:,} values, the file holds {held:,}")
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")  # the file's values, not a rounded copy
        try:
            model = build()
        finally:
            keras.config.set_dtype_policy(policy)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path!r}: its {NETWORK_ATTR} attribute is damaged ({e})") from None
    load_keras_file(model, path)
    return {w.path: np.asarray(w.numpy()) for w in model.weights}


def _values_in(path):
    """How many values the datasets of an HDF5 file hold."""
    total = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: total.append(obj.size)
                     if isinstance(obj, h5py.Dataset) else None)
    return int(sum(total))


def assign_checked(model, tensors, source, allow_unused_head=True, skip=()):
    """Assign `tensors` (path → array) to `model` after checking names and shapes.

    Variables whose path starts with a prefix in `skip` are left as they are, and the
    file's tensors of those names are ignored (fine-tuning: a new classifier).
    """
    skip = tuple(skip)
    variables = {w.path: w for w in model.weights if not (skip and w.path.startswith(skip))}
    if skip:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(skip)}
    missing = sorted(set(variables) - set(tensors))
    unexpected = sorted(
        k for k in set(tensors) - set(variables)
        if not (allow_unused_head and k.startswith(HEAD_PREFIXES)
                and not any(v.startswith(k.split("/")[0] + "/") for v in variables))
    )
    mismatched = sorted(
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(variables[k].shape)}"
        for k in set(tensors) & set(variables)
        if tuple(tensors[k].shape) != tuple(variables[k].shape)
    )
    if missing or unexpected or mismatched:
        lines = [f"weights {source!r} do not match model {model.name!r}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", mismatched)):
            if items:
                shown = ", ".join(items[:10]) + (f", ... ({len(items)} in all)"
                                                 if len(items) > 10 else "")
                lines.append(f"  {title} ({len(items)}): {shown}")
        head = sorted(k for k in set(tensors) & set(variables)
                      if k.startswith(HEAD_PREFIXES) and np.ndim(tensors[k]) == 2
                      and tuple(tensors[k].shape) != tuple(variables[k].shape))
        if head and len(mismatched) <= 2:  # only the classifier differs
            n = tensors[head[0]].shape[-1]
            lines.append(f"  (the file's classifier has {n} classes: give classes={n}, or "
                         "include_top=False)")
        raise ValueError("\n".join(lines))
    for k, w in variables.items():
        w.assign(np.asarray(tensors[k], dtype=w.dtype))


def not_a_weights_file(path):
    """Why `path` cannot be read as a weights file, in words that say what to give instead."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "config.json")):
            return (f"{path!r} is a training run's folder, not a weights file: give its "
                    f"final.weights.h5, or the folder as --model_dir")
        return f"{path!r} is a folder, not a weights file"
    hint = ""
    if difflib.get_close_matches(path.lower(), ["imagenet"], cutoff=0.7):
        hint = " (did you mean 'imagenet'?)"
    return f"weights file not found: {path!r}{hint}"


def load_weights(model, path):
    """Load a weights file into `model`; on any problem raise ValueError, model unchanged."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(not_a_weights_file(path))
    if is_sknet_weights_file(path):
        tensors, _ = read_weights(path)
        assign_checked(model, tensors, path)
        return model
    return load_keras_file(model, path)


def load_keras_file(model, path):
    """`model.load_weights(path)`, where a skipped or mismatched layer is an error and the
    model is left as it was."""
    backup = [w.numpy() for w in model.weights]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(path)
        skipped = [str(w.message) for w in caught if "Skipping" in str(w.message)
                   or "mismatch" in str(w.message).lower()]
        if skipped:
            raise ValueError("; ".join(skipped[:3]))
    except Exception as e:  # keras raises many types; restore and re-raise with the file's name
        for w, value in zip(model.weights, backup):
            w.assign(value)
        raise ValueError(
            f"could not load weights file {path!r} into model {model.name!r} "
            f"(corrupt file, or weights of another model?): {e}"
        ) from e
    return model
