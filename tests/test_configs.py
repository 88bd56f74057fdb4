"""The trainer's configuration: the typed config, the flags derived from it, and the errors
of both, through the commands' entry points in this process (nothing is trained here)."""

import dataclasses
import json

import pytest

from command_cases import run_in_process
from sknet_keras.trainers.configs import (FIELDS, RECIPES, ConfigError, ExperimentConfig,
                                          load_config_file, recipe)


BAD_FLAGS = [
    (["--model=sknet51"], "--model: Unknown model 'sknet51'. Did you mean 'sknet50'"),
    (["--strategy=default", "--cpu_replicas=2"],
     "--cpu_replicas: 2 replicas need --strategy mirrored or multi_worker_mirrored; got default"),
    (["--batch_size=0"], "--batch_size: must be >= 1; got 0"),
    (["--config.schedule.batch_size=0"], "--config.schedule.batch_size: must be >= 1; got 0"),
    (["--batch_size=8", "--config.schedule.batch_size=16"],
     "--batch_size: given twice, as --batch_size and --config.schedule.batch_size"),
    (["--params_override=schedule.batch_size=0"],
     "--params_override: schedule.batch_size: must be >= 1; got 0"),
    (["--params_override=optimizer.learning_rate=0.2, schedule.epochs=abc"],
     "--params_override: schedule.epochs: an integer expected; got 'abc'"),
    (["--params_override=optimizer.learning_rate"],
     "--params_override: expected section.field=value; got 'optimizer.learning_rate'"),
    (["--params_override={\"schedule\": \"step\"}"],
     "--params_override: 'schedule' is a section, not a setting"),
    (["--params_override=learning_rate=0.2"],
     "--params_override: 'learning_rate': no such setting; did you mean "
     "'optimizer.learning_rate'?"),
    (["--image_size=16"], "--image_size: must be >= 32; got 16"),
    (["--dataset=image_folder"], "--dataset: image_folder needs --data_dir"),
    (["--strategy=multi_worker_mirrored"], "--strategy: multi_worker_mirrored needs the "
                                           "TF_CONFIG environment variable"),
    (["--tpu=grpc://10.0.0.2:8470"], "--tpu: only --strategy tpu uses a TPU address"),
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--modle=sknet26"], "Did you mean: mode, model"),
    (["--weights=imagnet"], "--weights: weights file not found: 'imagnet' (did you mean "
                            "'imagenet'?)"),
    (["--epochs=abc"], "--epochs=abc"),
    (["--learning_rate=inf"], "--learning_rate: a finite number expected; got inf"),
    (["--lr_milestones=a,b"], "--lr_milestones: a finite number expected; got 'a'"),
    (["--lr_milestones=225,150"], "--lr_milestones: must be ascending epochs >= 0; got "
                                  "225.0,150.0"),
    (["--decay_rate=2"], "--decay_rate: must be in (0, 1]; got 2.0"),
    (["--params_override=optimizer.learnin_rate=3"],
     "--params_override: 'optimizer.learnin_rate': no such setting"),
    (["--params_override={"], "--params_override: not valid JSON"),
    (["--config_file=/nonexistent/config.json"],
     "--config_file: /nonexistent/config.json: No such file or directory"),
    (["--mixed_precision=float16", "--weights=imagenet", "--backbone_lr_multiplier=0.1"],
     "--backbone_lr_multiplier: needs --mixed_precision bfloat16 or float32"),
    (["--freeze_backbone_epochs=1"], "--freeze_backbone_epochs: fine-tuning needs --weights"),
    (["--jit_compile", "--sync_bn"], "--jit_compile: cannot be combined with --sync_bn"),
    (["--batch_size=5000"], "--batch_size: 5000 exceeds the 1437 training examples of digits"),
    (["--export=weights,pdf"], "--export: unknown 'pdf'"),
    (["--dataset=digts"], "--dataset: no dataset 'digts' in tfds (did you mean 'digits'"),
    (["--config_file=/dev/null", "--recipe=cifar"], "--recipe: --config_file holds every "
                                                    "setting"),
]


@pytest.mark.parametrize("args,message", BAD_FLAGS, ids=lambda v: str(v)[:40])
def test_bad_flags_fail_at_once_in_one_line_naming_the_flag(args, message, tmp_path, capsys):
    """Through the command's entry point (`train.run()`), in this process."""
    model_dir = tmp_path / "run"
    code, _, stderr = run_in_process("sknet_keras.trainers.train",
                                     args + [f"--model_dir={model_dir}"], capsys)
    lines = stderr.strip().splitlines()
    assert code == 2, (args, code, stderr)
    assert lines[0].startswith("sknet_keras.trainers.train: error: ") and \
        message in lines[0], (args, stderr)
    assert len(lines) <= 2 and "--help" in lines[-1], (args, stderr)  # no usage dump
    assert not model_dir.exists(), args  # nothing half-made


def test_only_check_args_makes_the_runs_checks_and_writes_nothing(tmp_path, capsys):
    """absl's --only_check_args exits after parsing; the trainer's own checks run first."""
    model_dir = tmp_path / "run"
    for args, message in BAD_FLAGS:
        code, _, stderr = run_in_process("sknet_keras.trainers.train", args + [
            "--only_check_args", f"--model_dir={model_dir}"], capsys)
        assert code == 2 and message in stderr.strip().splitlines()[0], (args, stderr)
    code, stdout, stderr = run_in_process("sknet_keras.trainers.train", [
        "--only_check_args", "--model=mini_sknet", f"--model_dir={model_dir}"], capsys)
    assert code == 0 and not stdout and not stderr.strip(), stderr
    assert not model_dir.exists()
    code, _, stderr = run_in_process("sknet_keras.trainers.train", [
        "--only_check_args", "stray"], capsys)
    assert code == 2 and "unexpected arguments: stray" in stderr.splitlines()[0], stderr
    for args, message in EVALUATE_CASES:
        code, _, stderr = run_in_process("sknet_keras.trainers.evaluate",
                                         args + ["--only_check_args"], capsys)
        assert code == 2 and message in stderr.strip().splitlines()[0], (args, stderr)


def test_every_setting_has_a_short_and_a_dotted_flag_and_they_agree(tmp_path, capsys):
    """The flags are derived from the config's fields: each field is settable both ways, and
    --config_file / --params_override / flags apply in that order over the recipe."""
    from absl import flags

    from sknet_keras.trainers import config_flags, train
    from sknet_keras.trainers.configs import FIELDS, recipe, short_flag, write_config

    fv = flags.FlagValues()
    train.define_flags(fv)
    for dotted in FIELDS:
        assert short_flag(dotted) in fv and f"config.{dotted}" in fv, dotted
    run = recipe("cifar").override(name="mini_sknet", learning_rate=0.3, epochs=7,
                                   milestones=(3, 5))
    write_config(run, str(tmp_path))
    fv(["train", f"--config_file={tmp_path}/config.json",
        "--params_override=schedule.epochs=9,optimizer.milestones=[4,6]",
        "--config.optimizer.learning_rate=0.2", "--seed=3", "--lr_schedule=cosine"])
    config, names = config_flags.config_from_flags(fv)
    assert config == run.override(epochs=9, milestones=(4, 6), learning_rate=0.2, seed=3,
                                  schedule="cosine")
    assert {d: v for d, v in names.items() if not v.startswith("--config_file")} == {
        "optimizer.learning_rate": "--config.optimizer.learning_rate", "schedule.seed": "--seed",
        "optimizer.schedule": "--lr_schedule", "schedule.epochs": "--params_override: "
        "schedule.epochs", "optimizer.milestones": "--params_override: optimizer.milestones"}
    # --recipe and the dataset's default recipe
    fv.unparse_flags()
    fv(["train", "--dataset=cifar100"])
    assert config_flags.config_from_flags(fv)[0] == recipe("cifar", "cifar100")
    fv.unparse_flags()
    fv(["train", "--recipe=imagenet_lightweight", "--params_override="
        '{"data": {"dataset": "image_folder"}, "model": {"name": "sknet50"}}'])
    assert config_flags.config_from_flags(fv)[0] == recipe(
        "imagenet_lightweight", "image_folder").override(name="sknet50")


def test_the_recipes_are_valid_and_configs_are_frozen():
    for name, config in RECIPES.items():
        assert config.validate().recipe == name
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECIPES["digits"].schedule.epochs = 1
    changed = RECIPES["digits"].override(epochs=3)
    assert changed.schedule.epochs == 3 and RECIPES["digits"].schedule.epochs == 10


def test_a_config_file_round_trips_and_a_wrong_one_names_its_field(tmp_path):
    from sknet_keras.trainers.configs import write_config

    config = recipe("cifar").override(name="sknet29", crop_area=(0.3, 0.9), image_sizes=(32, 40))
    path = write_config(config, str(tmp_path))
    assert load_config_file(path) == config
    d = config.to_dict()
    for section, key, value, message in [
            ("schedule", "epochs", "ten", "schedule.epochs: an integer expected; got 'ten'"),
            ("schedule", "epoch", 3, "schedule.epoch: no such setting"),
            ("data", "crop_area", 0.5, "data.crop_area: a list of floats expected; got 0.5"),
            ("model", "sync_bn", "yes", "model.sync_bn: true or false expected; got 'yes'"),
            ("model", "name", None, "model.name: a value is required; got None")]:
        bad = json.loads(json.dumps(d))
        bad[section][key] = value
        with pytest.raises(ConfigError) as error:
            ExperimentConfig.from_dict(bad)
        assert str(error.value) == message


def test_validation_names_the_field_and_checks_each_declared_requirement():
    base = recipe("digits")
    cases = {"schedule.batch_size": 0, "data.image_size": 31, "optimizer.learning_rate": 0.0,
             "optimizer.label_smoothing": 1.0, "data.augment": "heavy",
             "data.crop_fraction": 1.5, "data.eval_image_sizes": (224, 16),
             "runtime.precision": "float64", "model.num_classes": 1,
             "data.dataset": "Not A Name"}
    for dotted, value in cases.items():
        with pytest.raises(ConfigError) as error:
            base.override(**{dotted: value}).validate()
        assert error.value.field == dotted, (dotted, error.value)
    # Every field carries help text, and the flag names are unique.
    flag_names = [FIELDS[d][0].metadata["flag"] or d.split(".")[1] for d in FIELDS]
    assert len(set(flag_names)) == len(flag_names)
    assert all(FIELDS[d][0].metadata["help"] for d in FIELDS)


EVALUATE_CASES = [
    (["--model_dir=/x", "--weights=imagenet"], "give one of --model_dir and --weights"),
    ([], "give a run's --model_dir, or --weights"),
    (["--weights=imagenet", "--image_sizes=224,16"], "--image_sizes: must be each >= 32; got "
                                                     "224,16"),
    (["--weights=imagenet", "--model=sknet5"], "--model: Unknown model 'sknet5'"),
    (["--model_dir=/nonexistent/run"], "--model_dir: /nonexistent/run does not exist"),
    (["--model_dir=/tmp", "--checkpoint_dir=/var"], "--checkpoint_dir is another name of "
                                                    "--model_dir: give one"),
    (["--weights=imagenet", "--output=/nonexistent/x.json"],
     "--output: the folder of /nonexistent/x.json does not exist"),
    (["--model_dir=/dev/null"], "--model_dir: /dev/null is a file, not a run's folder"),
]


@pytest.mark.parametrize("args,message", EVALUATE_CASES, ids=lambda v: str(v)[:40])
def test_the_evaluator_refuses_bad_requests_in_one_line(args, message, capsys):
    code, _, stderr = run_in_process("sknet_keras.trainers.evaluate", args, capsys)
    lines = stderr.strip().splitlines()
    assert code == 2 and message in lines[0] and len(lines) <= 2, stderr


def test_the_model_dir_is_checked_before_anything_is_written(tmp_path, capsys):
    """A file where the folder should be, a folder that cannot be made, and --noresume over
    a run's checkpoints (which would train over them) are refused; nothing changes."""
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-4.index").write_bytes(b"")
    for args, message in [
            ([f"--model_dir={a_file}"], f"--model_dir: {a_file} is a file, not a folder"),
            (["--model_dir=/proc/sknet_keras_test/run"],
             "--model_dir: cannot create /proc/sknet_keras_test/run"),
            ([f"--model_dir={run}", "--noresume"],
             f"--resume: {run} holds a run's checkpoints")]:
        code, _, stderr = run_in_process("sknet_keras.trainers.train", args + [
            "--model=mini_sknet", "--max_steps=1", "--batch_size=8"], capsys)
        assert code == 2 and message in stderr.splitlines()[0], stderr
    assert a_file.read_text() == "mine"
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoints", "ckpt-4.index"]


def test_a_config_files_bad_value_is_named_with_the_file(tmp_path, capsys):
    from sknet_keras.trainers.configs import write_config

    d = recipe("digits").to_dict()
    d["schedule"]["batch_size"] = -4
    path = tmp_path / "config.json"
    path.write_text(json.dumps(d))
    code, _, stderr = run_in_process("sknet_keras.trainers.train", [
        f"--config_file={path}", f"--model_dir={tmp_path / 'run'}"], capsys)
    assert code == 2 and (f"--config_file: {path}: schedule.batch_size: must be >= 1; got -4"
                          in stderr.splitlines()[0]), stderr
    d["schedule"]["epochs"] = "ten"
    path.write_text(json.dumps(d))
    code, _, stderr = run_in_process("sknet_keras.trainers.train", [
        f"--config_file={path}", f"--model_dir={tmp_path / 'run'}"], capsys)
    assert (f"--config_file: {path}: schedule.epochs: an integer expected; got 'ten'"
            in stderr.splitlines()[0]), stderr
    # A broken config.json of a run is named as the run's.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{")
    code, _, stderr = run_in_process("sknet_keras.trainers.train", [
        f"--model_dir={tmp_path / 'old'}", "--mode=eval"], capsys)
    assert code == 2 and f"--model_dir: {tmp_path}/old/config.json: not valid JSON" in stderr
    write_config(recipe("digits"), str(tmp_path / "old"))
    assert not (tmp_path / "run").exists()
