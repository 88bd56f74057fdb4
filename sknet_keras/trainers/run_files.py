"""The files a run writes: complete or absent, each with a record to check it against.

Every file is written through `sknet_keras.atomic_files`, so a kill leaves the old file or
the new one, never half of one. `result.json` records each export's size and SHA-256; a
re-run checks them, since a file that exists can still be truncated or damaged.
"""

import errno
import hashlib
import json
import os

from sknet_keras.atomic_files import atomic_open, is_partial, remove, restore_interrupted


def write_json(path, payload):
    """`path` written atomically."""
    text = json.dumps(payload, indent=2) + "\n"  # a payload that fails, fails before the file
    with atomic_open(path) as f:
        f.write(text)


def read_json(path):
    """The JSON object in `path`, or None if missing, unreadable or not an object (a run's
    own records: a damaged one is written again, not trusted)."""
    try:
        with open(path) as f:
            payload = json.load(f)
    except (OSError, ValueError, RecursionError):  # RecursionError: nesting too deep
        return None
    return payload if isinstance(payload, dict) else None


def is_disk_full(error):
    """ENOSPC, as Python, h5py or TensorFlow report it."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(getattr(error, "message", "") or error)
    return "No space left on device" in text or "errno = 28" in text


def remove_partial_files(model_dir, subdirs=("checkpoints",)):
    """Clear what a killed run left half written: the atomic writer's temporaries (and the
    `.tmp` files of earlier versions), TensorFlow's `ckpt-N_temp` folders. Returns their
    names."""
    removed = []
    if os.path.isdir(model_dir):
        restore_interrupted(model_dir)  # an export folder a kill left moved aside
    for sub in ("",) + tuple(subdirs):
        folder = os.path.join(model_dir, sub)
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if is_partial(name) or name.endswith(".tmp") or (
                    sub and name.startswith("ckpt-") and name.endswith("_temp")):
                remove(os.path.join(folder, name))
                removed.append(os.path.join(sub, name))
    return removed


def _files(path):
    if os.path.isfile(path):
        yield "", path
        return
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            yield os.path.relpath(full, path), full


def record(path):
    """{"bytes", "sha256"} of a file, or of a folder (its files' relative names and contents,
    in sorted order)."""
    digest, size = hashlib.sha256(), 0
    for name, full in _files(path):
        if name:
            digest.update(name.encode() + b"\0")
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    return {"bytes": size, "sha256": digest.hexdigest()}


def check(path, expected):
    """None if `path` matches its record, else what is wrong with it (a few words)."""
    if not os.path.exists(path):
        return "it is missing"
    if not isinstance(expected, dict):
        return "result.json has no record of it"
    got = record(path)
    if got["bytes"] != expected.get("bytes"):
        return f"{got['bytes']} bytes, recorded {expected.get('bytes')}"
    if got["sha256"] != expected.get("sha256"):
        return "its SHA-256 differs from the one recorded"
    return None


def check_against_its_run(path):
    """None, or why `path`, an export of a trainer run, no longer matches the record its run
    wrote in result.json beside it. Files that are not a run's exports pass."""
    folder, name = os.path.split(os.path.abspath(path))
    exports = (read_json(os.path.join(folder, "result.json")) or {}).get("exports")
    if not isinstance(exports, dict) or name not in exports:
        return None
    problem = check(path, exports[name])
    if problem:
        return (f"{path} fails its check against {folder}/result.json ({problem}): run the "
                "training command again to export it again")
    return None
