"""Every kind of file the package writes is complete or absent: a child process writes a new
version over an old one and is killed (SIGKILL) at each step of the write: inside the
writer, at the flush to the disk, at the rename, after the rename. Once the run folder's
clean-up has run (as the next run does first), the target holds the old version or the new
one, whole (read back by its own reader), and nothing else is left."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from sknet_keras.trainers import run_files

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

STEPS = ("inside_the_writer", "at_the_flush", "at_the_rename", "after_the_rename")
# Where a folder cannot be swapped in one step: killed at each of its two renames.
FALLBACK_STEPS = ("at_the_flush", "between_the_renames", "after_the_rename")

# The child: `write(version)` writes the kind's file at `path`; KILL_AT names the step at
# which it kills itself with SIGKILL, during the second write (the first made the old file).
_CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from sknet_keras import atomic_files
    import atomic_writes
    kind, path, step = {kind!r}, {path!r}, {step!r}
    write = atomic_writes.WRITERS[kind]
    write(path, 1)

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if not {exchange}:  # the folder swap unavailable: the two-rename fallback
        atomic_files._exchange = lambda a, b: False
    real_rename = atomic_files._rename
    if step == "inside_the_writer":
        atomic_writes.KILL_INSIDE = die
    elif step == "at_the_flush":
        os.fsync = die
    elif step == "at_the_rename":
        atomic_files._rename = die
    elif step == "between_the_renames":  # the fallback's: the old folder moved aside
        real_replace, calls = os.replace, []
        def replace_once_then_die(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                die()
            real_replace(src, dst)
        os.replace = replace_once_then_die
    else:
        def rename_then_die(tmp, path):
            real_rename(tmp, path)
            die()
        atomic_files._rename = rename_then_die
    write(path, 2)
    print("the write finished without the kill", file=sys.stderr)
    sys.exit(3)
""")


def _kill_during_write(kind, path, step, exchange):
    code = _CHILD.format(tests=os.path.dirname(__file__), kind=kind, path=str(path), step=step,
                         exchange=exchange)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def _check(kind, path, step, exchange=True):
    from atomic_writes import READERS

    _kill_during_write(kind, path, step, exchange)
    run_files.remove_partial_files(str(path.parent))  # what the next run does first
    version = READERS[kind](str(path))  # raises if the file is partial or damaged
    assert version == (2 if step == "after_the_rename" else 1), (kind, step, version)
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary left


FAST_KINDS = {"run_record": "result.json", "run_config": "config.json",
              "weights_by_name": "model.h5", "atomic_open": "out.json"}
KERAS_KINDS = {"keras_weights": "final.weights.h5", "keras_model": "final.keras",
               "export_folder": "saved_model"}


@pytest.mark.parametrize("kind", sorted(FAST_KINDS))
@pytest.mark.parametrize("step", STEPS)
def test_a_killed_write_leaves_the_old_file_or_the_new(kind, step, tmp_path):
    _check(kind, tmp_path / FAST_KINDS[kind], step)


@pytest.mark.large
@pytest.mark.parametrize("kind", sorted(KERAS_KINDS))
@pytest.mark.parametrize("step", STEPS)
def test_a_killed_keras_write_leaves_the_old_file_or_the_new(kind, step, tmp_path):
    _check(kind, tmp_path / KERAS_KINDS[kind], step)


@pytest.mark.large
@pytest.mark.parametrize("step", FALLBACK_STEPS)
def test_a_killed_folder_write_without_the_swap_leaves_the_old_folder_or_the_new(step,
                                                                                 tmp_path):
    _check("export_folder", tmp_path / "saved_model", step, exchange=False)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    run_files.write_json(str(path), {"version": 1})
    with pytest.raises(TypeError):
        run_files.write_json(str(path), {"version": object()})  # not serializable
    assert json.loads(path.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["record.json"]
