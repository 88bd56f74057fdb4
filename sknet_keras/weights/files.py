"""Weight files: a strict, name-based format, and loading with errors that name the problem.

Our format is HDF5 with one dataset per Keras variable path (`conv2_block1_2_sk/
branch0_conv/kernel`) and a `format` attribute. Loading by name lets a file saved with the
classifier load into `include_top=False`, and lets us check everything before assigning
anything: missing, unexpected or wrongly shaped tensors are all listed in one error and the
model is left untouched. Keras' own `.weights.h5` files load too, through Keras, but its
loader only *warns* when it skips layers; we turn that into an error and roll back.
"""

import difflib
import os
import re
import warnings

import h5py
import numpy as np

FORMAT = "sknet_keras.weights.v1"
HEAD_PREFIXES = ("predictions/",)


def write_tensors(path, tensors, model_name="", **metadata):
    """Write {variable path: array} in our format; atomic (a temp file renamed into place)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["model"] = model_name
            for key, value in metadata.items():
                f.attrs[key] = value
            for name, value in tensors.items():
                f.create_dataset(name, data=np.asarray(value))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_weights(model, path, **metadata):
    """Write every variable of `model` by path (see `write_tensors`)."""
    write_tensors(path, {w.path: np.asarray(w.numpy()) for w in model.weights}, model.name,
                  **metadata)


def is_sknet_weights_file(path):
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
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
