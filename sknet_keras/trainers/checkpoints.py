"""A run's checkpoints: found on disk, restored whole or not at all, saved without loss.

`tf.train.latest_checkpoint` trusts the `checkpoint` state file: when that file names a
checkpoint whose files are gone (or lost its list), it answers None, and a resume would start
the run again from step 0. Here the candidates are the `ckpt-N.index` files on disk, newest
first; one that cannot be read (truncated, bit-flipped, a data shard missing) is skipped with a
line naming it, and the next older one is used. Each checkpoint has a progress record beside
it (`ckpt-N.json`: the figures of its last loop and evaluation), written before the
checkpoint itself, so that a run killed after its last checkpoint can still write its
result. A save that runs out of disk space stops the run in one line; TensorFlow's
`CheckpointManager` deletes old checkpoints only after the new one is complete.
"""

import errno
import glob
import os
import re

import keras
import tensorflow as tf

from sknet_keras.trainers import run_files

CHECKPOINT_SUBDIR = "checkpoints"
_STEP = re.compile(r"ckpt-(\d+)\.index$")


class CheckpointError(ValueError):
    """A checkpoint that does not hold the model it is restored into, or none readable."""


def checkpoint_dir(model_dir):
    return os.path.join(model_dir, CHECKPOINT_SUBDIR)


def candidates(model_dir):
    """Checkpoint prefixes in `model_dir`, newest step first: every `ckpt-N.index` on disk,
    whatever the state file says."""
    found = []
    for index in glob.glob(os.path.join(glob.escape(checkpoint_dir(model_dir)), "ckpt-*.index")):
        match = _STEP.search(os.path.basename(index))
        if match:
            found.append((int(match.group(1)), index[:-len(".index")]))
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(model_dir):
    """The newest checkpoint on disk (not yet read: see `restore_newest`), or None."""
    found = candidates(model_dir)
    return found[0] if found else None


def step_of(path):
    return int(path.rsplit("-", 1)[1])


def restore_checked(checkpoint, path):
    """Restore `path` into `checkpoint`'s objects; every one of their variables must be in
    the file, or CheckpointError names the missing ones. On any failure every variable keeps
    the value it had (nothing is half loaded)."""
    variables = [v for v in tf.train.TrackableView(checkpoint).descendants()
                 if isinstance(v, keras.Variable)]
    backup = [v.numpy() for v in variables]

    def roll_back():
        for v, value in zip(variables, backup):
            v.assign(value)

    try:
        status = checkpoint.restore(path)
    except BaseException:
        roll_back()
        raise
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        status.expect_partial()  # the error below says it all
        roll_back()
        text = str(e)
        names = sorted(set(re.findall(r"path=([^,\s]+),", text)
                           + re.findall(r"<tf\.Variable '([^':]+)", text)))
        count = re.search(r"Found (\d+) Python objects", text)
        shown = ", ".join(names[:6]) or text[:300]
        raise CheckpointError(
            f"checkpoint {path} does not hold every variable of the model (missing "
            f"{count.group(1) + ' objects, ' if count else ''}e.g. {shown}). It was written "
            "for another model, or by sknet_keras 0.1.0, whose checkpoints lacked the SK "
            "branch weights: it cannot be resumed or evaluated (final.weights.h5 of such a "
            "run is complete)") from None
    return status


def _why_unreadable(error):
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    text = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    return text[:160]


# What reading a damaged checkpoint raises (seen with TF 2.21: DataLossError for a flipped
# bit, an OpError "not an sstable" for a truncated index, IndexError "Read less bytes than
# requested" for a truncated data file, NotFound for a missing shard).
_READ_ERRORS = (tf.errors.OpError, IndexError, OSError, ValueError)


def restore_newest(checkpoint, model_dir, log=print):
    """Restore the newest readable checkpoint of `model_dir` into `checkpoint`; returns its
    path, or None where the run has none. Damaged ones are named and skipped. Where none is
    readable, CheckpointError says so in one line and nothing was changed."""
    skipped = []
    for path in candidates(model_dir):
        try:
            # Every object of ours was matched; what else the file holds (the optimizer, for
            # evaluation) is not wanted here.
            restore_checked(checkpoint, path).expect_partial()
        except CheckpointError:
            raise  # readable, but another model's: not damage to skip over
        except _READ_ERRORS as e:
            skipped.append(f"{os.path.basename(path)} ({_why_unreadable(e)})")
            log(f"checkpoint {path} is unreadable, skipped: {_why_unreadable(e)}")
            continue
        if skipped:
            log(f"using {path}, the newest readable checkpoint")
        return path
    if skipped:
        raise CheckpointError(f"no readable checkpoint in {checkpoint_dir(model_dir)}: "
                              f"{'; '.join(skipped)}. Nothing was changed")
    return None


# --- progress records ------------------------------------------------------------------------

def progress_path(prefix):
    return prefix + ".json"


def write_progress(prefix, record):
    """The figures belonging to checkpoint `prefix` (atomic)."""
    run_files.write_json(progress_path(prefix), record)


def read_progress(prefix):
    """The record beside checkpoint `prefix`, or None if missing or unreadable."""
    return run_files.read_json(progress_path(prefix))


def save(manager, step, record, previous=None):
    """Write checkpoint `ckpt-{step}` with its progress record (the record first: a
    checkpoint never lacks one). A full disk raises OSError(ENOSPC) in one line; the
    previous checkpoints are untouched."""
    directory = manager.directory
    prefix = os.path.join(directory, f"ckpt-{step}")
    try:
        os.makedirs(directory, exist_ok=True)
        write_progress(prefix, record)
        manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
        if run_files.is_disk_full(e):
            kept = f"; {previous} is intact" if previous else ""
            raise OSError(errno.ENOSPC, f"the disk is full: could not write checkpoint "
                                        f"{prefix}{kept}") from None
        raise
    for record_file in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.json")):
        if not os.path.exists(record_file[:-len(".json")] + ".index"):
            os.remove(record_file)  # its checkpoint was deleted (max_to_keep)
    return prefix
