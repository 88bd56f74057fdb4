"""What a long run meets loses nothing: damaged exports, a lost result.json, damaged or missing
checkpoints, divergence, a full disk. Each case starts from a copy of one finished run and is
checked by what is on disk afterwards (weights compared tensor by tensor), not by the words.

The trainer runs in this process (`experiment.run_experiment`, the commands' own function):
the faults are in the files, and the command line's one-line reporting is held by test_cli_reports_a_full_disk.
"""

import errno
import os
import re
import shutil
import subprocess
import uuid

import keras
import numpy as np
import pytest

from sknet_keras import cli
from sknet_keras.trainers import checkpoints, run_files
from sknet_keras.trainers.configs import recipe
from sknet_keras.trainers.experiment import run_experiment
from sknet_keras.weights.files import read_weights

pytestmark = pytest.mark.large

STEPS = 6  # checkpoints at 2, 4, 6 (steps_per_loop 2; the manager keeps 3)


def config(**changes):
    settings = dict(name="mini_sknet", image_size=32, batch_size=16, steps_per_epoch=STEPS,
                    max_steps=STEPS, steps_per_loop=2, precision="float32",
                    normalization="torch")
    return recipe("digits").override(**dict(settings, **changes))


def train(model_dir, capsys, **changes):
    """The trainer on `model_dir` (resuming, or re-checking a finished run); its stdout."""
    keras.backend.clear_session()
    try:
        run_experiment(config(**changes), "train", str(model_dir), exports=("weights",))
    finally:
        out = capsys.readouterr().out
        print(out)  # shown when the test fails
    return out


def evaluate(model_dir, **changes):
    """run_experiment's evaluation of a run's newest readable checkpoint, or of weights."""
    keras.backend.clear_session()
    return run_experiment(config(**changes), "eval", model_dir)


def tensors(path):
    return read_weights(path)[0]


def assert_same_weights(got, want):
    a, b = tensors(got), tensors(want)
    assert sorted(a) == sorted(b)
    assert any("branch1_conv" in k for k in a)  # the SK branches are in the comparison
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, different[:5]


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, folder)] = f.read()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run (6 steps, 3 checkpoints, final.weights.h5, result.json)."""
    model_dir = tmp_path_factory.mktemp("finished_run")
    keras.backend.clear_session()
    run_experiment(config(), "train", str(model_dir), exports=("weights",))
    return model_dir


@pytest.fixture
def run_copy(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def ckpt(model_dir, step):
    return os.path.join(model_dir, "checkpoints", f"ckpt-{step}")


def remove_checkpoint(model_dir, step):
    """Its files gone; the `checkpoint` state file still names it."""
    for suffix in (".index", ".data-00000-of-00001", ".json"):
        os.remove(ckpt(model_dir, step) + suffix)


def truncate(path, size=1000):
    with open(path, "r+b") as f:
        f.truncate(size)


def flip_byte(path, fraction=0.5):
    data = bytearray(open(path, "rb").read())
    data[int(len(data) * fraction)] ^= 0xFF
    open(path, "wb").write(bytes(data))


# --- a finished run's files ---------------------------------------------------------------

def test_a_finished_run_rerun_or_evaluated_changes_nothing(finished, run_copy, capsys):
    before = snapshot(run_copy)
    assert "already complete at step 6 (6 steps); nothing to train" in train(run_copy, capsys)
    assert snapshot(run_copy) == before
    keras.backend.clear_session()
    # The trainer's --mode=eval, evaluate --model_dir (the run's checkpoint) and evaluate
    # --weights=final.weights.h5: one function, the run's own figure (float32), nothing written.
    recorded = run_files.read_json(str(finished / "result.json"))
    by_dir = evaluate(str(run_copy))
    assert f"mini_sknet digits 32x32: top-1 {100 * recorded['val_top1']:.2f} %" in \
        capsys.readouterr().out
    by_file = evaluate(None, weights=str(run_copy / "final.weights.h5"))
    at_40 = evaluate(str(run_copy), eval_image_sizes=(40,))
    assert by_dir == by_file and by_dir[32]["examples"] == 360
    assert by_dir[32]["top1"] == recorded["val_top1"]
    assert list(at_40) == [40] and at_40[40]["examples"] == 360
    assert snapshot(run_copy) == before


def test_a_damaged_export_is_named_and_written_again(finished, run_copy, capsys):
    weights = run_copy / "final.weights.h5"
    recorded = run_files.record(weights)
    truncate(weights)
    # What evaluate --weights says first:
    assert re.fullmatch(rf"{weights} fails its check against {run_copy}/result\.json \(1000 "
                        rf"bytes, recorded {recorded['bytes']}\): run the training command "
                        "again to export it again", run_files.check_against_its_run(weights))
    out = train(run_copy, capsys)
    assert "already complete at step 6" in out
    assert (f"final.weights.h5: 1000 bytes, recorded {recorded['bytes']}; exporting it again "
            f"from {ckpt(run_copy, 6)}") in out
    assert_same_weights(weights, finished / "final.weights.h5")

    flip_byte(weights)  # same size, other bytes
    out = train(run_copy, capsys)
    assert "final.weights.h5: its SHA-256 differs from the one recorded" in out
    assert_same_weights(weights, finished / "final.weights.h5")
    assert run_files.read_json(str(run_copy / "result.json"))["exports"][
        "final.weights.h5"] == run_files.record(weights)
    assert run_files.check_against_its_run(weights) is None  # passes again

    os.remove(weights)  # absent: written again too
    assert "final.weights.h5: it is missing" in train(run_copy, capsys)
    assert_same_weights(weights, finished / "final.weights.h5")


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_lost_result_is_written_again_from_the_last_checkpoint(finished, run_copy, capsys,
                                                                  damage):
    """Killed after the last checkpoint, before result.json (or during its write, which
    an atomic rename rules out, but a disk can still damage it)."""
    result = run_copy / "result.json"
    os.remove(result) if damage == "deleted" else truncate(result, 20)
    out = train(run_copy, capsys)
    assert f"{result} was missing or unreadable: written again from {ckpt(run_copy, 6)}" in out
    want = run_files.read_json(str(finished / "result.json"))
    assert run_files.read_json(str(result)) == want  # every figure, and the records
    assert_same_weights(run_copy / "final.weights.h5", finished / "final.weights.h5")


# --- damaged and missing checkpoints ------------------------------------------------------

def _truncated_newest(d):
    truncate(ckpt(d, 6) + ".data-00000-of-00001")
    return 4, ["ckpt-6"]


def _flipped_index_and_next_deleted(d):
    flip_byte(ckpt(d, 6) + ".index", 0.3)
    remove_checkpoint(d, 4)
    return 2, ["ckpt-6"]


def _state_file_names_a_missing_one(d):
    remove_checkpoint(d, 6)  # tf.train.latest_checkpoint answers None here: step 0
    return 4, []


def _flipped_data(d):
    flip_byte(ckpt(d, 6) + ".data-00000-of-00001")
    return 4, ["ckpt-6"]


@pytest.mark.parametrize("damage", [_truncated_newest, _flipped_index_and_next_deleted,
                                    _state_file_names_a_missing_one, _flipped_data],
                         ids=lambda f: f.__name__.strip("_"))
def test_resume_skips_damaged_checkpoints_for_the_newest_readable(finished, run_copy, capsys,
                                                                   damage):
    """The run resumes from the newest readable checkpoint and ends with the weights and
    result of the run that was never damaged (the data order is a function of the step)."""
    resumed_at, skipped = damage(run_copy)
    out = train(run_copy, capsys)
    for name in skipped:
        assert f"checkpoint {run_copy}/checkpoints/{name} is unreadable, skipped: " in out
    assert f"resumed from {ckpt(run_copy, resumed_at)} at step {resumed_at}" in out
    assert_same_weights(run_copy / "final.weights.h5", finished / "final.weights.h5")
    got, want = (run_files.read_json(str(d / "result.json")) for d in (run_copy, finished))
    assert got == want


def test_no_readable_checkpoint_stops_in_one_line_and_changes_nothing(run_copy, capsys):
    for step in (2, 4, 6):
        truncate(ckpt(run_copy, step) + ".data-00000-of-00001", 100 * step)
    before = snapshot(run_copy)
    with pytest.raises(checkpoints.CheckpointError) as error:
        train(run_copy, capsys)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"no readable checkpoint in {run_copy}/checkpoints: ckpt-6 (")
    assert "ckpt-4 (" in message and "ckpt-2 (" in message and "Nothing was changed" in message
    assert snapshot(run_copy) == before
    # evaluate --model_dir says the same
    with pytest.raises(checkpoints.CheckpointError, match="no readable checkpoint in"):
        evaluate(str(run_copy))


def test_evaluate_uses_the_newest_readable_checkpoint(finished, run_copy, tmp_path, capsys):
    truncate(ckpt(run_copy, 6) + ".data-00000-of-00001")
    got = evaluate(str(run_copy))
    out = capsys.readouterr().out
    assert f"checkpoint {ckpt(run_copy, 6)} is unreadable, skipped" in out
    assert f"using {ckpt(run_copy, 4)}, the newest readable checkpoint" in out
    step4 = tmp_path / "step4"  # the same run without its step-6 checkpoint
    shutil.copytree(finished, step4)
    remove_checkpoint(step4, 6)
    assert evaluate(str(step4)) == got


# --- divergence -----------------------------------------------------------------------------

def test_a_diverging_run_stops_at_its_step_and_keeps_the_last_good_checkpoint(run_copy,
                                                                                capsys):
    remove_checkpoint(run_copy, 6)
    remove_checkpoint(run_copy, 4)
    kept = {k: v for k, v in snapshot(run_copy).items() if k.startswith("checkpoints/ckpt-2")}
    with pytest.raises(FloatingPointError) as error:
        train(run_copy, capsys, learning_rate=1e30)
    message = str(error.value)
    assert "\n" not in message
    assert "at step 3-4: the run diverged and stopped; " in message, message
    assert f"{ckpt(run_copy, 2)} (step 2) is kept, untouched" in message
    now = snapshot(run_copy)
    assert {k: v for k, v in now.items() if k.startswith("checkpoints/ckpt-2")} == kept
    assert not [k for k in now if k.startswith(("checkpoints/ckpt-3", "checkpoints/ckpt-4"))]
    assert checkpoints.latest_checkpoint(str(run_copy)) == ckpt(run_copy, 2)


# --- preemption -----------------------------------------------------------------------------

def _signal_inside_step(monkeypatch, step, signum):
    """The process signals itself from inside training step `step` (as the loop's graph runs
    it, so the signal arrives mid-loop, as a scheduler's would)."""
    import tensorflow as tf

    from sknet_keras.trainers.task import ClassificationTask

    original = ClassificationTask.train_step

    def send():
        os.kill(os.getpid(), signum)
        return 0

    def train_step(self, batch, model, optimizers, forward_backward=None):
        at = tf.equal(optimizers["optimizer"].iterations, step - 1)
        tf.cond(at, lambda: tf.py_function(send, [], tf.int32), lambda: tf.constant(0))
        return original(self, batch, model, optimizers, forward_backward)

    monkeypatch.setattr(ClassificationTask, "train_step", train_step)


def test_training_figures_do_not_depend_on_how_the_steps_are_grouped(finished, tmp_path, capsys):
    """result.json's training figures cover the epoch, not the last loop: with 3 loops of 2
    steps or 2 of 3 (bit-identical weights) they are the same, over all 6 × 16 examples."""
    (tmp_path / "loops_of_3").mkdir()
    train(tmp_path / "loops_of_3", capsys, steps_per_loop=3)
    got, want = (run_files.read_json(str(d / "result.json"))
                 for d in (tmp_path / "loops_of_3", finished))
    assert got["weights_checksum"] == want["weights_checksum"]
    assert want["train_examples_last_epoch"] == STEPS * 16
    figures = ("train_loss_last_epoch", "train_top1_last_epoch", "train_examples_last_epoch",
               "val_top1", "val_top5")
    assert {k: got[k] for k in figures} == {k: want[k] for k in figures}
    assert not {"loss", "accuracy"} & set(want)


@pytest.mark.parametrize("second", [None, "SIGTERM"])  # SIGINT: the chaos test
def test_a_signal_checkpoints_the_step_in_progress_and_resumes_exactly(
        finished, run_copy, capsys, monkeypatch, second):
    """SIGTERM inside step 5 of the loop 5-6 (resumed from ckpt-4): the run stops after step
    5 with ckpt-5 saved, status 143; re-run, it ends with the weights and every figure of the
    run never stopped (its last loop's loss sums restored). `second`: another signal arrives
    while ckpt-5 is being written: the save completes, ckpt-4 stays as it was."""
    import signal

    import tensorflow as tf

    from sknet_keras.trainers.preemption import Preempted

    remove_checkpoint(run_copy, 6)
    for name in ("final.weights.h5", "result.json"):
        os.remove(run_copy / name)
    kept = {k: v for k, v in snapshot(run_copy).items() if k.startswith("checkpoints/ckpt-4")}
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    _signal_inside_step(monkeypatch, 5, signal.SIGTERM)
    if second:
        original_save = tf.train.CheckpointManager.save

        def save_signalled(self, *args, **kwargs):
            os.kill(os.getpid(), getattr(signal, second))
            return original_save(self, *args, **kwargs)

        monkeypatch.setattr(tf.train.CheckpointManager, "save", save_signalled)
    with pytest.raises(Preempted) as stopped:
        train(run_copy, capsys)
    out = capsys.readouterr().out  # (train() printed it; the watcher's lines are here too)
    assert stopped.value.status == 128 + signal.SIGTERM
    assert str(stopped.value) == (f"stopped by SIGTERM at step 5: saved {ckpt(run_copy, 5)}; "
                                  "run the same command again to resume")
    record = checkpoints.read_progress(ckpt(run_copy, 5))
    assert record["step"] == 5 and record["epoch_sums"]["seen"] == [5 * 16.0]
    if second:
        assert f"{second} received again: the checkpoint is completed first" in out, out
    now = snapshot(run_copy)
    assert {k: v for k, v in now.items() if k.startswith("checkpoints/ckpt-4")} == kept
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers
    monkeypatch.undo()

    out = train(run_copy, capsys)
    assert f"resumed from {ckpt(run_copy, 5)} at step 5" in out
    assert_same_weights(run_copy / "final.weights.h5", finished / "final.weights.h5")
    got, want = (run_files.read_json(str(d / "result.json")) for d in (run_copy, finished))
    assert got == want  # loss and accuracy of the loop 5-6, evaluation, checksum, exports


# --- a full disk ----------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of `size` bytes (mounted here; root only), or skip."""
    mounted = []

    def make(size):
        point = tmp_path / f"disk{uuid.uuid4().hex[:6]}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(point)], capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()[:100]}): the "
                        "full-disk case needs root, as CI's container has")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _size(folder):
    return sum(len(v) for v in snapshot(folder).values())


def test_a_full_disk_stops_in_one_line_and_keeps_the_last_checkpoint(finished, small_disk,
                                                                      capsys):
    remove_from = small_disk(16 << 20)  # staging room: copy, then trim to step 2
    staged = remove_from / "run"
    shutil.copytree(finished, staged)
    remove_checkpoint(staged, 6)
    remove_checkpoint(staged, 4)
    checkpoint_bytes = os.path.getsize(ckpt(finished, 2) + ".data-00000-of-00001")
    # Room for the run as it is and half a checkpoint more: the step-4 save cannot complete.
    disk = small_disk(_size(staged) + checkpoint_bytes // 2 + (256 << 10))
    run_dir = disk / "run"
    shutil.copytree(staged, run_dir)
    kept = {k: v for k, v in snapshot(run_dir).items() if k.startswith("checkpoints/ckpt-2")}
    with pytest.raises(OSError) as error:
        train(run_dir, capsys)
    assert error.value.errno == errno.ENOSPC
    message = error.value.strerror
    assert message == (f"the disk is full: could not write checkpoint {ckpt(run_dir, 4)}; "
                       f"{ckpt(run_dir, 2)} is intact")
    now = snapshot(run_dir)
    assert {k: v for k, v in now.items() if k.startswith("checkpoints/ckpt-2")} == kept
    assert checkpoints.latest_checkpoint(str(run_dir)) == ckpt(run_dir, 2)
    # ... and it is readable: the run goes on from it once there is room again.
    shutil.rmtree(remove_from / "run")
    shutil.copytree(run_dir, remove_from / "run")
    out = train(remove_from / "run", capsys)
    assert f"resumed from {ckpt(remove_from / 'run', 2)} at step 2" in out
    assert_same_weights(remove_from / "run" / "final.weights.h5", finished / "final.weights.h5")


def test_cli_reports_a_full_disk_in_one_line(monkeypatch, capsys):
    def main(argv):
        raise OSError(errno.ENOSPC, "the disk is full: could not write checkpoint /x/ckpt-4; "
                                    "/x/ckpt-2 is intact")

    monkeypatch.setattr("sys.argv", ["sknet_keras.trainers.train"])
    with pytest.raises(SystemExit) as exit_:
        cli.run(main, "sknet_keras.trainers.train")
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("sknet_keras.trainers.train: error: the disk is full: could not write "
                      "checkpoint /x/ckpt-4; /x/ckpt-2 is intact")
    assert not any("Traceback" in line for line in err)


def test_a_full_disk_during_an_export_leaves_no_partial_file(finished, small_disk, capsys):
    disk = small_disk(_size(finished) + (300 << 10))
    run_dir = disk / "run"
    shutil.copytree(finished, run_dir)
    os.remove(run_dir / "final.weights.h5")  # frees 1.3 MB ...
    with open(disk / "filler", "wb") as f:  # ... taken again, but for 100 kB
        f.write(b"\0" * (os.path.getsize(finished / "final.weights.h5") - (100 << 10)))
    with pytest.raises(OSError) as error:
        train(run_dir, capsys)
    assert error.value.errno == errno.ENOSPC
    assert error.value.strerror == f"the disk is full: could not write {run_dir}/final.weights.h5"
    # Absent, never half written, and no temporary file left behind.
    assert sorted(os.listdir(run_dir)) == sorted(set(os.listdir(finished)) - {
        "final.weights.h5"})


# --- float16 loss scaling -------------------------------------------------------------------

def test_float16_overflow_steps_count_as_steps_and_resume_exactly(tmp_path, capsys):
    """Loss scaling skips the updates of steps whose float16 gradients overflow (the first
    ones here, from the initial scale 2^15); they still count as steps: each epoch's data
    once, one evaluation per epoch, checkpoints numbered by the steps run. A run stopped at
    step 2 and resumed ends with the weights of one run straight to step 4."""
    import tensorflow as tf

    f16 = dict(precision="float16", steps_per_epoch=2, max_steps=4, steps_per_loop=2)
    out = train(tmp_path / "straight", capsys, **f16)
    assert out.count("epoch 1/2") == 1 and out.count("epoch 2/2") == 1, out
    assert re.findall(r"evaluation at step (\d+)", out) == ["2", "4"], out
    reader = tf.train.load_checkpoint(ckpt(tmp_path / "straight", 4))
    iterations = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                  if k.startswith("optimizer/") and "iterations" in k]
    assert iterations and int(iterations[0]) < 4  # updates were skipped: the case at stake
    train(tmp_path / "resumed", capsys, **dict(f16, max_steps=2))
    assert "resumed from" in train(tmp_path / "resumed", capsys, **f16)
    assert_same_weights(tmp_path / "resumed" / "final.weights.h5",
                        tmp_path / "straight" / "final.weights.h5")
