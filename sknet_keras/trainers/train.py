"""`python -m sknet_keras.trainers.train`: train any registry model.

Default (no flags): SKNet-26 on scikit-learn's bundled 8×8 digits upsampled to 32×32 — no
download, a few minutes on 2 CPU cores, prints validation accuracy. The run's settings come
from a named recipe (by default the dataset's), overridden by the flags given, and are
written to `--model_dir/config.json`. Re-running the same command resumes the run, or, once
it is complete, says so and changes nothing. See the README for ImageNet / CIFAR on one GPU,
eight GPUs and several machines.
"""

import os
import shutil
import sys

from sknet_keras import cli
from absl import flags, logging  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

from sknet_keras.weights.files import not_a_weights_file
from sknet_keras.trainers import precision
from sknet_keras.trainers.configs import (AUGMENTATIONS, DATASET_HELP, DEFAULT_EXPORTS,
                                          EXPORT_FILES, OPTIMIZERS, PRECISIONS, RECIPES,
                                          SCHEDULES, STRATEGIES, default_recipe)

FLAGS = flags.FLAGS
flags.DEFINE_enum("recipe", None, sorted(RECIPES), "Named recipe giving every default "
                  "(default: imagenet_senet for ImageNet / image_folder, cifar for CIFAR, "
                  "digits for digits).")
flags.DEFINE_string("model", "sknet26", "Registry model name.")
flags.DEFINE_string("weights", None, "Initialize from pretrained weights: 'imagenet' or a "
                    "weights file (the classifier is re-created for the dataset's classes).")
flags.DEFINE_string("dataset", "digits", f"Dataset: {DATASET_HELP}.")
flags.DEFINE_string("data_dir", None, "tfds data_dir, or the image_folder root.")
flags.DEFINE_string("model_dir", "runs/default", "Checkpoints, TensorBoard logs, exports, "
                    "config.json and result.json.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resume if possible, then "
                  "evaluate), or eval: evaluate the latest checkpoint of --model_dir again.")
flags.DEFINE_integer("epochs", None, "Epochs.")
flags.DEFINE_integer("batch_size", None, "Global batch size.")
flags.DEFINE_integer("image_size", None, "Training and evaluation resolution.")
flags.DEFINE_float("learning_rate", None, "Learning rate for the recipe's reference batch "
                   "size (256; 128 for CIFAR), scaled linearly with --batch_size.")
flags.DEFINE_enum("lr_schedule", None, list(SCHEDULES), "Step decay or cosine.")
flags.DEFINE_float("warmup_epochs", None, "Linear warmup epochs.")
flags.DEFINE_float("decay_epochs", None, "Epochs between ×0.1 steps (step schedule).")
flags.DEFINE_list("lr_milestones", None, "Epochs of the ×0.1 steps (instead of "
                  "--decay_epochs), e.g. 150,225.")
flags.DEFINE_float("weight_decay", None, "Weight decay (not on BN or biases).")
flags.DEFINE_float("label_smoothing", None, "Label smoothing.")
flags.DEFINE_enum("optimizer", None, list(OPTIMIZERS), "Optimizer (SGD momentum 0.9).")
flags.DEFINE_float("backbone_lr_multiplier", None, "Fine-tuning: learning-rate factor of the "
                   "pretrained layers (the new classifier gets the full rate).")
flags.DEFINE_float("freeze_backbone_epochs", None, "Fine-tuning: epochs during which only "
                   "the new classifier trains.")
flags.DEFINE_enum("mixed_precision", None, list(PRECISIONS),
                  "Precision (default: float16 on a GPU, bfloat16 on a TPU or a CPU with native "
                  "bfloat16, float32 elsewhere).")
flags.DEFINE_enum("strategy", None, list(STRATEGIES), "tf.distribute strategy.")
flags.DEFINE_integer("cpu_replicas", None, "Split the CPU into N logical devices (replicas).")
flags.DEFINE_string("tpu", None, "TPU address (--strategy=tpu).")
flags.DEFINE_bool("jit_compile", None, "XLA-compile the per-replica forward/backward.")
flags.DEFINE_bool("sync_bn", None, "Synchronize BN batch statistics across replicas.")
flags.DEFINE_bool("rematerialize", None, "Recompute each SK unit in the backward "
                  "(less memory, slower steps).")
flags.DEFINE_integer("steps_per_epoch", None, "Override steps per epoch (short runs).")
flags.DEFINE_integer("max_steps", None, "Stop after this many steps in all.")
flags.DEFINE_integer("steps_per_loop", None, "Steps per tf.function call (and per checkpoint).")
flags.DEFINE_bool("resume", True, "Resume from the latest checkpoint in --model_dir.")
flags.DEFINE_enum("augment", None, list(AUGMENTATIONS), "Training augmentation.")
flags.DEFINE_float("randaugment_magnitude", None, "keras-cv RandAugment magnitude (0: off; "
                   "its draws are not replayed exactly on resume).")
flags.DEFINE_integer("randaugment_ops", None, "RandAugment operations per image.")
flags.DEFINE_float("mixup_alpha", None, "MixUp alpha (0: off).")
flags.DEFINE_float("cutmix_alpha", None, "CutMix alpha (0: off).")
flags.DEFINE_float("rotation", None, "Random rotation range in degrees (SENet: 10).")
flags.DEFINE_float("pixel_jitter", None, "Random per-channel shift range (SENet: 20).")
flags.DEFINE_enum("on_bad_image", None, ["skip", "stop"],
                  "Corrupt images: skip (named, counted) or stop the run.")
flags.DEFINE_integer("seed", None, "Random seed (weights, data order, augmentation).")
flags.DEFINE_list("export", list(DEFAULT_EXPORTS), "What to write at the end, any of: "
                  + ", ".join(f"{k} ({v})" for k, v in EXPORT_FILES.items())
                  + "; 'none' (or false) for nothing. Each is recorded (size, SHA-256) in "
                  "result.json and checked when the command is run again.")

# flag → config field, where the names differ.
FLAG_FIELDS = {"model": "model.name", "lr_schedule": "optimizer.schedule",
               "lr_milestones": "optimizer.milestones", "mixed_precision": "runtime.precision",
               "strategy": "runtime.strategy", "weights": "model.weights",
               "sync_bn": "model.sync_bn", "rematerialize": "model.rematerialize",
               "optimizer": "optimizer.optimizer", "seed": "schedule.seed",
               "dataset": "data.dataset", "data_dir": "data.data_dir"}
NOT_CONFIG = ("recipe", "model_dir", "mode", "resume", "export")
RESULT = "result.json"


def config_from_flags():
    """The recipe's config with every flag the user gave (or that has no recipe value)."""
    from sknet_keras.trainers.configs import recipe

    dataset = FLAGS.dataset
    config = recipe(FLAGS.recipe or default_recipe(dataset), dataset)
    changes = {}
    for name in FLAGS.get_key_flags_for_module(sys.modules[__name__]):
        name = name.name
        if name in NOT_CONFIG or name == "dataset":
            continue
        value = FLAGS[name].value
        if value is None or not (FLAGS[name].present or name in ("model", "data_dir")):
            continue
        if name == "lr_milestones":
            try:
                value = tuple(float(v) for v in value)
            except ValueError:
                raise cli.UsageError(f"--lr_milestones: numbers expected; got {value}") from None
        changes[FLAG_FIELDS.get(name, name)] = value
    config = config.override(**changes)
    config.validate()
    from sknet_keras.registry import get_model_config

    try:
        config.model.name = get_model_config(config.model.name).name  # the registry's spelling
    except ValueError as e:
        raise cli.UsageError(f"--model: {e}") from None
    if config.model.weights not in (None, "imagenet"):
        if not os.path.isfile(config.model.weights):
            raise cli.UsageError(f"--weights: {not_a_weights_file(config.model.weights)}")
        config.model.weights = os.path.abspath(config.model.weights)
    config.runtime.precision, why = precision.choose(config.runtime.precision,
                                                     config.runtime.strategy)
    print(f"precision: {config.runtime.precision} ({why})", flush=True)
    if config.data.normalization is None:
        from sknet_keras.applications import preprocessing_mode

        config.data.normalization = preprocessing_mode(config.model.name)
    return config


def check_resumable(config, model_dir):
    """Refuse to continue a run in `model_dir` as a different model; note other changes."""
    from sknet_keras.trainers.configs import differences, read_config

    previous = read_config(model_dir)
    if previous is None:
        return
    for field in ("model.name", "model.num_classes", "data.dataset"):
        section, name = field.split(".")
        old, new = getattr(getattr(previous, section), name), getattr(getattr(config, section),
                                                                        name)
        if old != new:
            raise cli.UsageError(
                f"{model_dir} holds a run of {field}={old!r}, not {new!r}: use another "
                f"--model_dir, or the run's own settings")
    for field, old, new in differences(previous, config):
        print(f"note: {field} was {old!r} in {model_dir}/config.json, now {new!r}")


def _print_result(model_dir):
    path = os.path.join(model_dir, RESULT)
    res = _read_result(path)
    if res:
        if "val_top1" in res:
            print(f"validation accuracy: {res['val_top1']:.4f} (top-5 {res['val_top5']:.4f}) "
                  f"as recorded in {path}")


def export_formats(values):
    """--export's list as EXPORT_FILES names (True: the defaults; 'none' / False: none)."""
    if values is True:
        return DEFAULT_EXPORTS
    if values in (False, None):
        return ()
    values = [v.strip().lower() for v in ([values] if isinstance(values, str) else values)]
    if values in (["none"], ["false"], ["0"], []):
        return ()
    if values in (["true"], ["1"]):
        return DEFAULT_EXPORTS
    unknown = [v for v in values if v not in EXPORT_FILES]
    if unknown:
        raise cli.UsageError(f"--export: unknown {', '.join(map(repr, unknown))}; choose from "
                             f"{', '.join(EXPORT_FILES)}, or none")
    return tuple(dict.fromkeys(values))


def _read_result(path):
    from sknet_keras.trainers.run_files import read_json

    return read_json(path)


def _finish(trainer, model_dir, formats, history=None):
    """Write the exports and result.json. On a re-run of a finished run (`history` None),
    check them against result.json's records instead, and redo what fails the check from
    the run's last checkpoint, saying so."""
    from sknet_keras.trainers import checkpoints, run_files

    name = RESULT if trainer.chief else f"result.worker{trainer.task_id}.json"
    path = os.path.join(model_dir, name)
    if history is not None:
        history["step"] = trainer.step
        records = trainer.export(formats)
        if records:
            history["exports"] = records
            print(f"exported {', '.join(records)} in {model_dir}")
        run_files.write_json(path, history)
        return history
    source = trainer.resumed_from
    progress = checkpoints.read_progress(source) or {}
    if trainer.task.spec.eval_examples and "val_top1" not in progress:
        # Stopped before its last evaluation. Every worker evaluates (a collective under
        # MultiWorkerMirroredStrategy): the record read is the same file for all of them.
        progress.update(trainer.evaluate())
        if trainer.chief:
            checkpoints.write_progress(source, progress)
    result = _read_result(path)
    if result is None:  # stopped after the last checkpoint, before the result was written
        result = dict(trainer.final_history(progress), step=trainer.step)
        if not trainer.chief:
            run_files.write_json(path, result)
            return result
        print(f"{path} was missing or unreadable: written again from {source}")
    if not trainer.chief:
        return result
    records = dict(result.get("exports", {}))
    redo = []
    for fmt in formats:
        problem = run_files.check(os.path.join(model_dir, EXPORT_FILES[fmt]),
                                  records.get(EXPORT_FILES[fmt]))
        if problem:
            print(f"{EXPORT_FILES[fmt]}: {problem}; exporting it again from {source}")
            redo.append(fmt)
    if redo:
        records.update(trainer.export(redo))
        result["exports"] = records
    if redo or _read_result(path) is None:
        run_files.write_json(path, result)
    return result


def train(config, model_dir, resume=True, export=True, mode="train"):
    """Run (or continue, or re-evaluate) the experiment `config` in `model_dir`; `export`:
    --export's names (or True / False)."""
    formats = export_formats(export)
    import keras

    from sknet_keras.trainers import datasets
    from sknet_keras.trainers.configs import write_config
    from sknet_keras.trainers.loop import Trainer, latest_checkpoint
    from sknet_keras.trainers.strategy import make_strategy
    from sknet_keras.trainers.task import ClassificationTask

    r, s = config.runtime, config.schedule
    strategy = make_strategy(r.strategy, r.cpu_replicas, r.tpu)
    keras.utils.set_random_seed(s.seed)
    spec = datasets.load_spec(config.data.dataset, config.data.data_dir)
    if config.model.num_classes is None:
        config.model.num_classes = spec.num_classes
    if resume:
        check_resumable(config, model_dir)
    if mode == "eval" and not latest_checkpoint(model_dir):
        raise cli.UsageError(f"--mode=eval: no checkpoint in {model_dir}/checkpoints")
    task = ClassificationTask(config, spec)
    trainer = Trainer(task, strategy, model_dir, resume=resume)
    print(f"{config.model.name} on {spec.name} ({spec.train_examples} train / "
          f"{spec.eval_examples} eval images, {spec.num_classes} classes), "
          f"{config.data.image_size}x{config.data.image_size}, global batch {s.batch_size} "
          f"over {strategy.num_replicas_in_sync} replica(s), {r.precision}, "
          f"{task.steps_per_epoch} steps/epoch, recipe {config.recipe}", flush=True)
    if trainer.resumed_from:
        print(f"resumed from {trainer.resumed_from} at step {trainer.step}")
    if mode == "eval":
        result = trainer.evaluate(summaries=False)
        print(f"validation accuracy: {result['val_top1']:.4f} (top-5 {result['val_top5']:.4f}"
              f") at step {trainer.step}; nothing written")
        return result
    if trainer.complete and trainer.resumed_from:
        print(f"already complete at step {trainer.step} ({task.total_steps} steps); nothing "
              f"to train (--mode=eval evaluates it again)")
        with trainer.stop:  # a signal during the exports: stop between two of them
            _finish(trainer, model_dir, formats)
        _print_result(model_dir)
        return None
    if trainer.chief:
        write_config(config, model_dir)
    with trainer.stop:
        history = _finish(trainer, model_dir, formats, trainer.train())
    if "val_top1" in history:
        print(f"validation accuracy: {history['val_top1']:.4f} (top-5 "
              f"{history['val_top5']:.4f}, chance {1 / spec.num_classes:.4f})")
    sys.stdout.flush()
    return history


def main(argv):
    del argv
    config = config_from_flags()
    formats = export_formats(FLAGS.export)
    model_dir = FLAGS.model_dir
    created = not os.path.exists(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    from sknet_keras.trainers.preemption import Preempted

    try:
        train(config, model_dir, FLAGS.resume, formats, FLAGS.mode)
    except Preempted as e:  # not an error: the run's progress is saved
        sys.stdout.flush()
        print(e, file=sys.stderr, flush=True)
        sys.exit(e.status)
    except BaseException:
        # A run that fails before its first checkpoint leaves nothing behind.
        from sknet_keras.trainers.loop import latest_checkpoint

        if created and not latest_checkpoint(model_dir):
            shutil.rmtree(model_dir, ignore_errors=True)
        raise


def run():
    logging.set_verbosity(logging.WARNING)
    cli.run(main, "sknet_keras.trainers.train")


if __name__ == "__main__":
    run()
