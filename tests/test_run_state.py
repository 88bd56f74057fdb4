"""A training run's state can be trusted: checkpoints hold every weight, a killed run resumes
to exactly the weights of an uninterrupted one, a finished run re-runs idempotently, evaluation
of a run equals evaluation of its exported weights, and uneven batches count every example."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from command_cases import run_in_process
from conftest import DATA_DIR
from sknet_keras.registry import ResNetConfig, SKConfig
from sknet_keras.trainers import checkpoints
from sknet_keras.trainers.checkpoints import CheckpointError, restore_checked
from sknet_keras.applications import build_model
from sknet_keras.weights.files import read_weights, save_weights
from commands import ENV, EVALUATE, TRAIN, run

pytestmark = pytest.mark.large





def jpeg(rng, h=36, w=44):
    return tf.io.encode_jpeg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).numpy()


def image_folder(root, rng, train=(6, 6), validation=(9, 9), classes=("cat", "dog")):
    for split, counts in (("train", train), ("validation", validation)):
        for cls, n in zip(classes, counts):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{cls}{i}.jpg").write_bytes(jpeg(rng))
    return root


# --- checkpoints of an earlier version -----------------------------------------------------

def test_checkpoint_of_version_0_1_fails_naming_the_missing_branch_weights():
    """sknet_keras 0.1.0 wrote checkpoints without the SK branch weights (kept in Python
    lists). tests/data/sknet_keras_0.1_checkpoint is one, written by that version; restoring
    it must refuse, naming what is missing, not load half of it."""
    from sknet_keras.applications import build_model

    config = ResNetConfig("tiny_sknet", block="bottleneck", depths=(1, 1, 1, 1),
                          widths=(8, 8, 8, 8), out_channels=(16, 16, 16, 16), groups=4,
                          attention="sk", stem_width=8, sk=SKConfig(min_attn_channels=4))
    model = build_model(config, input_shape=(32, 32, 3), classes=3)
    before = [w.numpy() for w in model.weights]
    path = tf.train.latest_checkpoint(os.path.join(DATA_DIR, "sknet_keras_0.1_checkpoint"))
    sk_variables = [w for w in model.weights if "_sk/" in w.path]
    with pytest.raises(CheckpointError, match=rf"does not hold every variable of the model "
                                              rf"\(missing {len(sk_variables)} objects, "
                                              rf"e\.g\. conv\d_block1_2_sk/"):
        restore_checked(tf.train.Checkpoint(model=model), path)
    # Nothing was half loaded: every variable still holds its value from before.
    for w, value in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), value)


# --- kill, resume, re-run, evaluate ---------------------------------------------------------

def _weights(path):
    tensors, _ = read_weights(path)
    return tensors


def _names(model_dir):
    return {os.path.join(sub, n) for sub in ("", "checkpoints")
            for n in _listing(model_dir, sub)}


def _listing(*parts):
    try:
        return os.listdir(os.path.join(*parts))
    except OSError:
        return []


def _interrupt(cmd, model_dir, plan, timeout=300):
    """Start `cmd`; for each (ready, delay, signal) of `plan` in turn, send the signal
    `delay` seconds after `ready(names)` first names something (`names`: what appeared in
    model_dir and its checkpoints since the start, polled every millisecond). Then wait for
    the command's end. Returns (what each step saw, None once the command had ended first;
    exit status; its output)."""
    before = _names(model_dir)
    with open(f"{model_dir}.stderr", "w+") as err:
        proc = subprocess.Popen(cmd, env=ENV, stdout=err, stderr=subprocess.STDOUT)
        deadline, seen = time.time() + timeout, []
        for ready, delay, signum in plan:
            found = None
            while time.time() < deadline and proc.poll() is None:
                found = ready(_names(model_dir) - before)
                if found:
                    time.sleep(delay)
                    break
                time.sleep(0.001)
            alive = proc.poll() is None
            if alive:
                proc.send_signal(signum)
            seen.append(found if alive else None)
        status = proc.wait(timeout=timeout)
        err.seek(0)
        return seen, status, err.read()


def _kill_when(cmd, model_dir, ready, delay):
    """SIGKILL `cmd` `delay` seconds after `ready` first names something (see _interrupt);
    returns what was named, or None if the command ended first."""
    seen, _, _ = _interrupt(cmd, model_dir, [(ready, delay, signal.SIGKILL)])
    return seen[0]


def _checkpoint(new):
    """A new checkpoint written (its index renamed into place)."""
    done = sorted(n for n in new if n.endswith(".index"))
    return f"after {done[0]}" if done else None


def _checkpoint_before(last_step):
    """A new checkpoint of a step at most `last_step`: a signal sent soon after it lands
    mid-run, not after the final step, however fast the machine runs the steps between
    (CI once ran the 4 steps after such a checkpoint in 0.14 s, inside the delay)."""
    def ready(new):
        steps = sorted(int(n[len("checkpoints/ckpt-"):-len(".index")]) for n in new
                       if n.startswith("checkpoints/ckpt-") and n.endswith(".index"))
        early = [s for s in steps if s <= last_step]
        return f"after checkpoints/ckpt-{early[0]}.index" if early else None
    return ready


def _writing(new):
    """A checkpoint save or an export under way: TensorFlow's `ckpt-N_temp` folder, a
    progress record or an export under its temporary name (not config.json, which every
    start writes)."""
    busy = sorted(n for n in new if n.startswith(("checkpoints/", ".tmp."))
                  and (n.endswith("_temp") or ".tmp" in n) and not n.endswith("config.json"))
    return f"inside {busy[0]}" if busy else None


def _exporting(new):
    """The SavedModel under its temporary name (`atomic_files`: .tmp.<pid>.saved_model)."""
    busy = [n for n in new if re.fullmatch(r"\.tmp\.\d+\.saved_model", n)]
    return f"inside {busy[0]}" if busy else None


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    """The chaos test: five SIGKILLs at seeded random moments (mid-epoch, inside
    checkpoint saves, inside the export) and two SIGTERMs (one at a random moment, one
    followed by SIGINT inside the save it causes), resumed each time by the same command:
    final weights and result.json bit-identical to a run never interrupted, with
    augmentation (random crop, flip, rotation, jitter, MixUp / CutMix) in the data."""
    args = ["--model=mini_sknet", "--image_size=32", "--batch_size=16", "--steps_per_epoch=6",
            "--max_steps=24", "--steps_per_loop=2", "--mixed_precision=float32",
            "--augment=senet", "--mixup_alpha=0.4", "--cutmix_alpha=1.0", "--seed=3",
            "--export=weights,saved_model"]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    run(TRAIN + args + [f"--model_dir={straight}"])

    rng = np.random.default_rng(22)
    cmd = TRAIN + args + [f"--model_dir={killed}"]
    kills = [_kill_when(cmd, killed, _checkpoint, rng.uniform(0, 1.5)) for _ in range(2)]
    kills += [_kill_when(cmd, killed, _writing, 0.0) for _ in range(2)]  # inside a save
    for second in (None, signal.SIGINT):
        # At least 3 loops of 2 steps remain after the checkpoint: the SIGTERM lands mid-run.
        plan = [(_checkpoint_before(18), rng.uniform(0, 0.05), signal.SIGTERM)]
        if second:
            plan.append((_writing, 0.0, second))  # inside the save the SIGTERM causes
        seen, status, out = _interrupt(cmd, killed, plan)
        print(seen, out[-300:])
        assert seen[0] and status == 128 + signal.SIGTERM, (seen, status, out[-3000:])
        stopped = re.findall(r"stopped by SIGTERM at step (\d+): saved (\S+);", out)
        assert len(stopped) == 1, out[-3000:]
        step, saved = stopped[0]
        assert saved == os.path.join(killed, "checkpoints", f"ckpt-{step}")
        assert checkpoints.latest_checkpoint(killed) == saved
        received = re.findall(r"SIGTERM received at step (\d+)", out)
        assert int(step) - int(received[0]) in (0, 1), out[-3000:]
        if second and seen[1]:
            assert "SIGINT received again: the checkpoint is completed first" in out
        kills.append(f"SIGTERM {seen}: stopped at step {step}")
    kills.append(_kill_when(cmd, killed, _exporting, rng.uniform(0, 0.2)))  # the SavedModel
    print("kills:", kills)
    assert all(kills), kills  # each kill came at its moment, not after the run had ended
    assert not os.path.exists(os.path.join(killed, "result.json")), kills
    resumed = run(cmd)
    assert "resumed from" in resumed.stdout
    leftovers = [n for n in _names(killed) if n.endswith("_temp") or ".tmp" in n]
    assert not leftovers, leftovers  # what the kills left half written is cleared away

    a = _weights(os.path.join(straight, "final.weights.h5"))
    b = _weights(os.path.join(killed, "final.weights.h5"))
    assert sorted(a) == sorted(b)
    assert any("branch1_conv" in k for k in a)  # the SK branches are in the comparison
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, different[:5]
    ra, rb = (json.load(open(os.path.join(d, "result.json"))) for d in (straight, killed))
    # Every figure, and the weights file's record; a SavedModel's bytes hold the names of the
    # functions traced in its process (so are compared by what it serves, test_export.py).
    assert ra.pop("exports")["final.weights.h5"] == rb.pop("exports")["final.weights.h5"]
    assert ra == rb
    # Re-running it, evaluating it: tests/test_faults.py, on a finished run's copies.


def test_evaluate_takes_the_run_from_its_config_and_refuses_mismatches(tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    run(TRAIN + ["--model=mini_sknet", "--max_steps=2", "--steps_per_epoch=2",
                 "--batch_size=16", "--export=false", f"--model_dir={model_dir}"])
    folder = image_folder(tmp_path / "two_classes", np.random.default_rng(0))
    wrong_model, noted, classes, folder_as_weights = (
        run_in_process("sknet_keras.trainers.evaluate", args, capsys) for args in [
            [f"--model_dir={model_dir}", "--model=sknet26"],
            [f"--model_dir={model_dir}", "--image_sizes=40"],
            [f"--model_dir={model_dir}", "--dataset=image_folder", f"--data_dir={folder}"],
            [f"--weights={model_dir}", "--model=mini_sknet", "--dataset=digits"]])
    assert wrong_model[0] == 2
    assert (f"--model: {model_dir} holds a run of --model='mini_sknet', not 'sknet26'"
            in wrong_model[2].splitlines()[0])
    assert noted[0] == 0, noted[2]
    # float32 that nobody asked for is the evaluation's default, and says so
    assert ("\nprecision: float32 (the evaluation's default: exact; --mixed_precision to "
            "change it (") in "\n" + noted[1], noted[1][:300]
    assert "note: --image_sizes=40 overrides the run's data.eval_image_sizes=32" in noted[1]
    assert "mini_sknet digits 40x40: top-1" in noted[1]
    assert classes[0] == 2
    assert "--num_classes: 10 classes, but image_folder has 2" in classes[2], classes[2]
    # --weights=RUN means what it means in every command: the run's final weights, or (this
    # run exported none) its newest checkpoint, with the run's settings, as --model_dir.
    assert folder_as_weights[0] == 0, folder_as_weights[2]
    assert "mini_sknet digits 32x32: top-1" in folder_as_weights[1], folder_as_weights[1]
    other = run_in_process("sknet_keras.trainers.train",
                           ["--model=sknet26", "--max_steps=1", f"--model_dir={model_dir}"],
                           capsys)
    assert other[0] == 2 and "holds a run of --model='mini_sknet'" in other[2]
    # The trainer's --mode=eval takes the run's own settings (no --model needed), noting
    # what the flags change; its figure is the evaluator's in the same precision.
    again = run_in_process("sknet_keras.trainers.train", [
        "--mode=eval", f"--model_dir={model_dir}", "--image_sizes=40"], capsys)
    assert again[0] == 0, again[2]
    assert "note: data.eval_image_sizes was () in" in again[1]
    precision = json.load(open(os.path.join(model_dir, "config.json")))["runtime"]["precision"]
    same = run_in_process("sknet_keras.trainers.evaluate", [
        f"--model_dir={model_dir}", "--image_sizes=40", f"--mixed_precision={precision}"],
        capsys)
    assert f"\nprecision: {precision} (as requested (" in "\n" + same[1], same[1][:300]
    overridden = run_in_process("sknet_keras.trainers.evaluate", [
        f"--model_dir={model_dir}", "--image_sizes=40",
        f"--params_override=runtime.precision={precision}"], capsys)
    assert f"\nprecision: {precision} (as requested (" in "\n" + overridden[1], overridden
    line = [l for l in again[1].splitlines() if l.startswith("mini_sknet digits 40x40")]
    assert line and line[0] in same[1], (again[1], same[1])


def test_evaluate_of_a_runs_weights_file_takes_the_runs_settings(tmp_path, capsys):
    """`evaluate --weights=RUN/final.weights.h5`, as the README suggests, evaluates as
    `--model_dir=RUN` does (the run's network, dataset, size and normalization), not as
    ImageNet weights of sknet50."""
    model_dir = str(tmp_path / "run")
    run(TRAIN + ["--model=mini_sknet", "--max_steps=2", "--steps_per_epoch=2",
                 "--batch_size=16", "--export=weights", f"--model_dir={model_dir}"])
    by_file, by_folder = (run_in_process("sknet_keras.trainers.evaluate", args, capsys)
                          for args in ([f"--weights={model_dir}/final.weights.h5"],
                                       [f"--model_dir={model_dir}"]))
    assert by_file[0] == 0, by_file[2]
    assert f"note: evaluating with the settings of the run {model_dir}" in by_file[1]
    assert "overrides" not in by_file[1]  # the file is what is evaluated, not an override

    def figures(out):
        return [line.split(" at step")[0] for line in out.splitlines()
                if line.startswith("mini_sknet digits 32x32")]

    assert figures(by_file[1]) and figures(by_file[1]) == figures(by_folder[1]), by_file[1]


def test_evaluate_of_a_weights_file_defaults_to_the_datasets_resolution(tmp_path):
    weights = str(tmp_path / "mini.weights.h5")
    save_weights(build_model("mini_sknet", input_shape=(32, 32, 3), classes=10), weights)
    proc = run(EVALUATE + [f"--weights={weights}", "--model=mini_sknet", "--dataset=digits"])
    assert "note: evaluating at 32x32, the digits recipe's size" in proc.stdout
    assert "mini_sknet digits 32x32: top-1" in proc.stdout and "224x224" not in proc.stdout


# --- uneven batches over replicas ----------------------------------------------------------

UNEVEN_EVAL = r"""
import json, sys
from sknet_keras.trainers.strategy import make_strategy
mirrored = make_strategy("mirrored", cpu_replicas=2)
import keras, tensorflow as tf
from sknet_keras.trainers import datasets
from sknet_keras.trainers.configs import recipe
from sknet_keras.trainers.loop import run_evaluation
from sknet_keras.trainers.task import ClassificationTask
spec = datasets.load_spec("image_folder", sys.argv[1])
config = recipe("imagenet_senet", "image_folder").override(
    name="mini_sknet", image_size=32, batch_size=8, precision="float32", normalization="torch",
    data_dir=sys.argv[1])
task = ClassificationTask(config, spec)
keras.utils.set_random_seed(0)
with mirrored.scope():
    model = task.build_model()
weights = [w.numpy() for w in model.weights]
single_model = task.build_model()
single_model.set_weights(weights)
out = {"mirrored": run_evaluation(mirrored, task, model),
       "single": run_evaluation(tf.distribute.get_strategy(), task, single_model)}
print(json.dumps(out))
"""


def test_mirrored_evaluation_with_an_empty_replica_batch_counts_every_image(tmp_path, rng):
    """18 validation images, global batch 8 over 2 replicas: 8 + 8 + 2, so the last step
    gives one replica 2 images and the other none."""
    root = image_folder(tmp_path / "folder", rng)
    proc = run([sys.executable, "-c", UNEVEN_EVAL, str(root)])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mirrored"][2] == out["single"][2] == 18
    assert out["mirrored"][:2] == pytest.approx(out["single"][:2], abs=1e-9)
    assert 0 < out["single"][1] <= 1  # top-5 over two classes: every image


def test_mirrored_training_cli_on_an_uneven_image_folder(tmp_path, rng):
    root = image_folder(tmp_path / "folder", rng)
    model_dir = str(tmp_path / "run")
    run(TRAIN + ["--model=mini_sknet", "--dataset=image_folder", f"--data_dir={root}",
                 "--image_size=32", "--batch_size=8", "--strategy=mirrored",
                 "--cpu_replicas=2", "--max_steps=2", "--export=false",
                 f"--model_dir={model_dir}"])
    res = json.load(open(os.path.join(model_dir, "result.json")))
    assert res["val_examples"] == 18


# --- image folders that cannot be trained on ------------------------------------------------

def test_image_folder_problems_are_one_line_and_leave_nothing_behind(tmp_path, rng):
    one_class = image_folder(tmp_path / "one", rng, train=(4,), validation=(2,),
                             classes=("cat",))
    model_dir = tmp_path / "run"
    base = TRAIN + ["--model=mini_sknet", "--dataset=image_folder", "--image_size=32",
                    "--batch_size=4", f"--model_dir={model_dir}"]
    proc = run(base + [f"--data_dir={one_class}"], check=False)
    assert proc.returncode == 2
    assert "needs at least two classes" in proc.stderr.splitlines()[0]
    assert not model_dir.exists()

    extra = image_folder(tmp_path / "extra", rng, train=(2, 2), validation=(1, 1, 1),
                         classes=("cat", "dog", "emu"))  # no train/emu
    proc = run(base + [f"--data_dir={extra}"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].endswith("lacks: emu (a class the model never trains "
                                                "on)"), proc.stderr
    assert not model_dir.exists()

    corrupt = image_folder(tmp_path / "corrupt", rng, train=(3, 3), validation=(1, 1))
    for path in (corrupt / "train").rglob("*.jpg"):
        path.write_bytes(path.read_bytes()[:40])
    proc = run(base + [f"--data_dir={corrupt}"], check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "no training image could be read" in errors[0], proc.stderr
    assert "steps_per_epoch" not in proc.stderr
    assert not model_dir.exists()
