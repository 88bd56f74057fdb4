"""One experiment, trained or evaluated: `run_experiment(config, mode, model_dir)` (TF Model
Garden's `train_lib.run_experiment`), behind both `python -m sknet_keras.trainers.train` and
`python -m sknet_keras.trainers.evaluate`.

`resolve` runs first, once: it checks every setting by field name, fills in what the config
leaves to the machine and the data (the registry's spelling of the model, the weights' path,
the precision that fits the hardware, the weights' normalization, the dataset's classes), checks
the config against the data and the replicas, and returns it frozen with the strategy and the
dataset. Nothing runs and nothing is written before it has passed.
"""

import contextlib
import dataclasses
import os
import sys

from sknet_keras import file_lock
from sknet_keras.trainers import checkpoints, datasets, precision, run_files
from sknet_keras.trainers.configs import EXPORT_FILES, ConfigError, differences, read_config
from sknet_keras.trainers.configs import write_config

MODES = ("train", "eval")
RESULT = "result.json"


@dataclasses.dataclass(frozen=True)
class Experiment:
    config: object  # the resolved ExperimentConfig
    spec: datasets.DataSpec
    strategy: object


def resolve(config, log=print, precision_source="as requested"):
    """The `Experiment` of `config`, or ConfigError naming the first field that cannot run;
    logs the precision chosen and why (the run's first line; `precision_source`: where a
    requested precision came from)."""
    from sknet_keras.applications import preprocessing_mode
    from sknet_keras.registry import get_model_config
    from sknet_keras.trainers.strategy import make_strategy
    from sknet_keras.weights.files import not_a_weights_file

    config.validate()
    changes = {}
    try:
        changes["model.name"] = get_model_config(config.model.name).name  # registry spelling
    except ValueError as e:
        raise ConfigError("model.name", str(e)) from None
    weights = config.model.weights
    if weights not in (None, "imagenet"):
        if not os.path.isfile(weights):
            raise ConfigError("model.weights", not_a_weights_file(weights))
        problem = run_files.check_against_its_run(weights)
        if problem:
            raise ConfigError("model.weights", problem)
        changes["model.weights"] = os.path.abspath(weights)
    r = config.runtime
    try:
        chosen, why = precision.choose(r.precision, r.strategy, precision_source)
    except ValueError as e:
        raise ConfigError("runtime.precision", str(e)) from None
    log(f"precision: {chosen} ({why})")
    changes["runtime.precision"] = chosen
    if config.data.normalization is None:
        changes["data.normalization"] = preprocessing_mode(changes["model.name"])
    try:
        strategy = make_strategy(r.strategy, r.cpu_replicas, r.tpu)
    except ValueError as e:
        raise ConfigError("runtime.strategy", str(e)) from None
    spec = datasets.load_spec(config.data.dataset, config.data.data_dir)
    if config.model.num_classes is None:
        changes["model.num_classes"] = spec.num_classes
    config = config.override(**changes)
    s, replicas = config.schedule, strategy.num_replicas_in_sync
    if config.model.num_classes != spec.num_classes:
        raise ConfigError("model.num_classes", f"{config.model.num_classes} classes, but "
                          f"{spec.name} has {spec.num_classes}")
    if s.steps_per_epoch is None and s.batch_size > spec.train_examples:
        raise ConfigError("schedule.batch_size", f"{s.batch_size} exceeds the "
                          f"{spec.train_examples} training examples of {spec.name}")
    if s.batch_size % replicas:
        raise ConfigError("schedule.batch_size", f"{s.batch_size} is not divisible by the "
                          f"{replicas} replicas")
    return Experiment(config, spec, strategy)


def check_config(config):
    """What `resolve` checks, with nothing built, for --only_check_args. A TPU or multi-worker
    strategy is not made (that would contact the TPU, or wait for every worker): for those
    only the config itself is validated."""
    from sknet_keras.trainers.strategy import check_cluster

    if config.runtime.strategy in ("tpu", "multi_worker_mirrored"):
        config.validate()
        try:
            check_cluster(config.runtime.strategy)
        except ValueError as e:
            raise ConfigError("runtime.strategy", str(e)) from None
    else:
        resolve(config, log=lambda *args: None)


def run_experiment(config, mode, model_dir=None, *, resume=True, exports=(), log=print,
                   notes=True, precision_source="as requested"):
    """mode "train": train `config` in `model_dir` (resuming it; a finished run is checked and
    its exports redone where damaged), evaluate, write `exports` (EXPORT_FILES names) and
    result.json; returns the result. mode "eval": top-1 / top-5 of `model_dir`'s newest
    readable checkpoint, or else of `config.model.weights`, at `config.eval_sizes`; writes
    nothing; returns {size: {"top1", "top5", "examples"}}. `notes`: log each setting that
    differs from the run's config.json; `precision_source`: see `resolve`."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}; got {mode!r}")
    unknown = [e for e in exports if e not in EXPORT_FILES]
    if unknown:
        raise ValueError(f"exports: unknown {unknown}; expected any of {list(EXPORT_FILES)}")
    if mode == "train" and not model_dir:
        raise ConfigError("model_dir", "training needs a model_dir")
    if model_dir and os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ConfigError("model_dir", f"{model_dir} is a file, not a folder")
    if mode == "train" and not resume and model_dir and checkpoints.candidates(model_dir):
        raise ConfigError("resume", f"{model_dir} holds a run's checkpoints: a run that does "
                          "not resume needs a new or empty model_dir (nothing was changed)")
    if mode == "eval" and not model_dir and not config.model.weights:
        raise ConfigError("model.weights", "an evaluation needs a run's model_dir or weights")
    experiment = resolve(config, log, precision_source)
    with _one_writer(experiment, model_dir, mode, log):
        if model_dir and resume:
            _check_resumable(experiment.config, model_dir, log, mode == "train", notes)
        if mode == "eval":
            return _evaluate(experiment, model_dir, log)
        return _train(experiment, model_dir, resume, tuple(exports), log)


RUN_LOCK = ".sknet_keras.lock"


@contextlib.contextmanager
def _one_writer(experiment, model_dir, mode, log):
    """One process at a time in a run folder: a live holder of its lock (another trainer or
    evaluation) refuses this one before anything is written; a lock left by a killed process
    is taken over, saying so. Under MultiWorkerMirroredStrategy only the chief holds it (the
    workers share the folder; a second job's chief is refused). Object stores (`gs://`) have
    no file locks: there, nothing but using one folder per job keeps two apart."""
    from sknet_keras.trainers import strategy as strategy_lib

    if (not model_dir or "://" in model_dir or not strategy_lib.is_chief(experiment.strategy)
            or (mode == "eval" and not os.path.isdir(model_dir))):
        yield
        return
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError("model_dir", f"cannot create {model_dir}: {e.strerror or e}") from None

    def stale(holder):
        log(f"{model_dir}: took over the lock of {file_lock.describe(holder)}, which stopped "
            "without releasing it (killed, or its machine lost)")

    purpose = "training" if mode == "train" else "evaluating"
    try:
        with file_lock.hold(os.path.join(model_dir, RUN_LOCK), purpose, wait=False,
                            on_stale=stale):
            yield
    except file_lock.LockedError as e:
        raise ConfigError("model_dir", f"{file_lock.describe(e.holder)} is using {model_dir}; "
                          "nothing was changed: wait for it to finish, or choose another "
                          "model_dir") from None


def _check_resumable(config, model_dir, log, training, notes):
    """Refuse to continue (or evaluate) a run in `model_dir` as another model; note other
    changes."""
    previous = read_config(model_dir)
    if previous is None:
        return
    for field in ("model.name", "model.num_classes", "data.dataset")[:3 if training else 1]:
        if previous.get(field) != config.get(field):
            raise ConfigError(field, f"{model_dir} holds a run of {field}="
                              f"{previous.get(field)!r}, not {config.get(field)!r}: use "
                              f"another model_dir, or the run's own settings")
    if notes:
        for field, old, new in differences(previous, config):
            log(f"note: {field} was {old!r} in {model_dir}/config.json, now {new!r}")


# --- training ---------------------------------------------------------------------------------

def _train(experiment, model_dir, resume, formats, log):
    import keras

    from sknet_keras.trainers.loop import Trainer
    from sknet_keras.trainers.task import ClassificationTask

    config, spec, strategy = experiment.config, experiment.spec, experiment.strategy
    keras.utils.set_random_seed(config.schedule.seed)
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError("model_dir", f"cannot create {model_dir}: {e.strerror or e}") from None
    task = ClassificationTask(config, spec)
    trainer = Trainer(task, strategy, model_dir, resume=resume, log=log)
    log(f"{config.model.name} on {spec.name} ({spec.train_examples} train / "
        f"{spec.eval_examples} eval images, {spec.num_classes} classes), "
        f"{config.data.image_size}x{config.data.image_size}, global batch "
        f"{config.schedule.batch_size} over {strategy.num_replicas_in_sync} replica(s), "
        f"{config.runtime.precision}, {task.steps_per_epoch} steps/epoch, recipe "
        f"{config.recipe}")
    if trainer.resumed_from:
        log(f"resumed from {trainer.resumed_from} at step {trainer.step}")
    if trainer.complete and trainer.resumed_from:
        log(f"already complete at step {trainer.step} ({task.total_steps} steps); nothing to "
            f"train (--mode=eval evaluates it again)")
        with trainer.stop:  # a signal during the exports: stop between two of them
            result = _finish(trainer, model_dir, formats, log)
        if "val_top1" in result:
            log(f"validation accuracy: {result['val_top1']:.4f} (top-5 "
                f"{result['val_top5']:.4f}) as recorded in {os.path.join(model_dir, RESULT)}")
        return result
    if trainer.chief:
        write_config(config, model_dir)
    with trainer.stop:
        history = _finish(trainer, model_dir, formats, log, trainer.train())
    if "val_top1" in history:
        log(f"validation accuracy: {history['val_top1']:.4f} (top-5 "
            f"{history['val_top5']:.4f}, chance {1 / spec.num_classes:.4f})")
    sys.stdout.flush()
    return history


def _finish(trainer, model_dir, formats, log, history=None):
    """Write the exports and result.json. On a re-run of a finished run (`history` None),
    check them against result.json's records instead, and redo what fails the check from
    the run's last checkpoint, saying so."""
    name = RESULT if trainer.chief else f"result.worker{trainer.task_id}.json"
    path = os.path.join(model_dir, name)
    if history is not None:
        history["step"] = trainer.step
        records = trainer.export(formats)
        if records:
            history["exports"] = records
            log(f"exported {', '.join(records)} in {model_dir}")
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
    result = run_files.read_json(path)
    if result is None:  # stopped after the last checkpoint, before the result was written
        result = dict(trainer.final_history(progress), step=trainer.step)
        if not trainer.chief:
            run_files.write_json(path, result)
            return result
        log(f"{path} was missing or unreadable: written again from {source}")
    if not trainer.chief:
        return result
    records = dict(result.get("exports", {}))
    redo = []
    for fmt in formats:
        problem = run_files.check(os.path.join(model_dir, EXPORT_FILES[fmt]),
                                  records.get(EXPORT_FILES[fmt]))
        if problem:
            log(f"{EXPORT_FILES[fmt]}: {problem}; exporting it again from {source}")
            redo.append(fmt)
    if redo:
        records.update(trainer.export(redo))
        result["exports"] = records
    if redo or run_files.read_json(path) is None:
        run_files.write_json(path, result)
    return result


# --- evaluation -------------------------------------------------------------------------------

def _evaluate(experiment, model_dir, log):
    import keras
    import tensorflow as tf

    from sknet_keras.trainers.loop import run_evaluation
    from sknet_keras.trainers.task import ClassificationTask

    config, spec, strategy = experiment.config, experiment.spec, experiment.strategy
    checkpoint = None
    if model_dir:
        checkpoint = checkpoints.latest_checkpoint(model_dir)
        if not checkpoint:
            raise ConfigError("model_dir", f"no checkpoint in {model_dir}/checkpoints")
    results = {}
    for size in config.eval_sizes:
        # The task builds the bare network: the weights are loaded whole below.
        run = config.override(image_size=size, weights=None, sync_bn=False,
                              rematerialize=False)
        task = ClassificationTask(run, spec)
        with strategy.scope():
            model = task.build_model()
        if checkpoint:  # the newest readable one: damaged ones are named and skipped
            checkpoint = checkpoints.restore_newest(
                tf.train.Checkpoint(model=model), model_dir,
                log=log if size == config.eval_sizes[0] else (lambda *a: None))
        else:
            task.load_weights(model, config.model.weights)
        top1, top5, n = run_evaluation(strategy, task, model)
        results[size] = {"top1": top1, "top5": top5, "examples": n}
        where = f" at step {checkpoints.step_of(checkpoint)}" if checkpoint else ""
        log(f"{config.model.name} {spec.name} {size}x{size}: top-1 {100 * top1:.2f} %, top-5 "
            f"{100 * top5:.2f} % ({n} images){where}")
        keras.backend.clear_session()
    return results
