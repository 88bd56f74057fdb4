"""`python -m sknet_keras.trainers.evaluate`: top-1 / top-5 of a training run or weights file.

`--model_dir=DIR` evaluates a trainer run's newest readable checkpoint with the run's own
model, dataset, image size and normalization (from `DIR/config.json`); flags given override
them, with a note. `--weights` means what it means in every command
(`sknet_keras.trainers.model_source`): a run's folder (its final weights, or before it has
finished its newest checkpoint, as --model_dir) or a weights file beside a run's config.json
bring the run's settings too; a weights file, `imagenet` or `architecture.tag` are evaluated
with the flags' settings.
Both go through `experiment.run_experiment(config, "eval")`, as the trainer's --mode=eval;
the flags are the config's evaluation settings (short and dotted, as the trainer's).

ImageNet protocol of the papers and timm: resize the shorter side to size / crop_fraction,
centre crop (224 from 256; also 320), the interpolation of the weights, the model's own
normalization.
"""

import json
import os

from sknet_keras import cli
from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

from sknet_keras.trainers import config_flags
from sknet_keras.trainers.configs import (EXPORT_FILES, ConfigError, default_recipe,
                                          read_config, recipe)
from sknet_keras.trainers.model_source import resolve as resolve_source
from sknet_keras.trainers.settings import shown

FLAGS = flags.FLAGS
# What an evaluation changes of a run's settings unless told otherwise: float32, one device,
# batches of 64, no training-only layer options.
EVALUATION = dict(precision="float32", batch_size=64, strategy="default", cpu_replicas=1,
                  tpu=None, jit_compile=False, sync_bn=False, rematerialize=False,
                  weights=None)


def define_flags(flag_values=FLAGS):
    module = config_flags.defining_module(__name__)
    config_flags.define(flag_values, module, evaluation=True)
    args = dict(flag_values=flag_values, module_name=module, allow_override=True)
    flags.DEFINE_string("model_dir", None, "A training run's --model_dir: its newest readable "
                        "checkpoint and its config.json.", **args)
    if "checkpoint_dir" in flag_values:  # an alias of an earlier --model_dir: renewed
        delattr(flag_values, "checkpoint_dir")
    flags.DEFINE_alias("checkpoint_dir", "model_dir", flag_values=flag_values,
                       module_name=module)
    flags.DEFINE_string("output", None, "Optional JSON file for the results.", **args)


def base_config(f, given):
    """The config the flags override: the run's (`--model_dir`), else the dataset's recipe
    with sknet50 on imagenet2012 as defaults. Returns (config, run config or None)."""
    model_dir = f.model_dir
    run = read_config(model_dir) if model_dir else None
    if model_dir and run is None:
        if not os.path.isdir(model_dir):
            raise cli.UsageError(f"--model_dir: {model_dir} " + (
                "is a file, not a run's folder" if os.path.exists(model_dir) else
                "does not exist"))
        if not {"model.name", "data.dataset", "data.eval_image_sizes"} <= set(given):
            raise cli.UsageError(
                f"{model_dir} has no config.json (a run of an older version?): give --model, "
                "--dataset and --image_sizes")
    if run is not None:
        return run.override(**EVALUATION), run
    # --weights as every command reads it (model_source): a weights problem is named here,
    # before any dataset is looked at; a run's folder or weights file brings its settings.
    source = resolve_source(given.get("model.name", (None, None))[1], f.weights)
    if source.run is not None:
        print(f"note: evaluating with the settings of the run {source.run_dir} (its "
              f"config.json: {source.run.model.name} on {source.run.data.dataset} at "
              f"{source.run.data.image_size}x{source.run.data.image_size}); flags given "
              "override them")
        return source.run.override(**{**EVALUATION, "weights": source.weights}), source.run
    dataset = given.get("data.dataset", (None, "imagenet2012"))[1]
    if os.path.isfile(f.weights) and "model.name" not in given:
        print(f"note: evaluating {source.model}, the network {f.weights} holds (--model to "
              "change it)")
    return recipe(default_recipe(dataset), dataset).override(model=source.model,
                                                             **EVALUATION), None


def resolve(f):
    """(config, model_dir) from the flags and the run's config.json, with notes."""
    from sknet_keras.presets import evaluation_defaults

    if f["checkpoint_dir"].present and f["model_dir"].present > f["checkpoint_dir"].present:
        raise cli.UsageError("--checkpoint_dir is another name of --model_dir: give one")
    if f.model_dir and f.weights:
        raise cli.UsageError("give one of --model_dir and --weights")
    if f.output and not os.path.isdir(os.path.dirname(os.path.abspath(f.output))):
        raise cli.UsageError(f"--output: the folder of {f.output} does not exist")
    if not f.model_dir and not f.weights:
        raise cli.UsageError("give a run's --model_dir, or --weights (a file or imagenet)")
    if f.weights and os.path.isdir(f.weights) and not os.path.isfile(
            os.path.join(f.weights, EXPORT_FILES["weights"])):
        f.model_dir, f.weights = f.weights, None  # a run not finished: its newest checkpoint
    given = config_flags.given(f)
    base, run = base_config(f, given)
    config, flag_names = config_flags.config_from_flags(f, base=base)
    if base.model.weights != config.model.weights and run is not None and not f.model_dir:
        config = config.override(weights=base.model.weights)  # RUN: its final weights file
    if run is not None:
        for dotted in given:
            old = run.eval_sizes if dotted == "data.eval_image_sizes" else run.get(dotted)
            if config.get(dotted) != old and dotted not in (
                    "schedule.batch_size", "runtime.precision", "model.weights"):
                print(f"note: {flag_names[dotted]}={shown(config.get(dotted))} overrides the "
                      f"run's {dotted}={shown(old)}")
        if run.runtime.precision != config.runtime.precision:
            print(f"note: evaluating in {config.runtime.precision}; the run trained and "
                  f"evaluated in {run.runtime.precision} (--mixed_precision="
                  f"{run.runtime.precision} reproduces its result.json)")
    else:
        changes = {}
        if "data.eval_image_sizes" not in given:
            if config.data.dataset == "imagenet2012":
                changes["eval_image_sizes"] = (224, 320)
            else:
                size = config.data.image_size
                print(f"note: evaluating at {size}x{size}, the {config.recipe} recipe's size "
                      "(--image_sizes to change it)")
        crop, interpolation = evaluation_defaults(
            config.model.name if config.model.weights == "imagenet" else None)
        if "data.crop_fraction" not in given:
            changes["crop_fraction"] = crop
        if "data.eval_interpolation" not in given:
            changes["eval_interpolation"] = interpolation
        config = config.override(**changes)
    return config, flag_names


def main(argv, flag_values=FLAGS):
    del argv
    from sknet_keras.trainers.experiment import run_experiment

    flag_names = {}
    try:
        config, flag_names = resolve(flag_values)
        source = ("as requested" if "runtime.precision" in flag_names  # flag, override, file
                  else "the evaluation's default: exact; --mixed_precision to change it")
        results = run_experiment(config, "eval", flag_values.model_dir, notes=False,
                                 precision_source=source)
    except ConfigError as e:
        raise cli.UsageError(config_flags.describe(e, flag_names)) from None
    if flag_values.output:
        from sknet_keras import file_lock
        from sknet_keras.atomic_files import atomic_open

        with file_lock.writing(flag_values.output, "sknet_keras.trainers.evaluate"), \
                atomic_open(flag_values.output) as f:
            json.dump({str(k): v for k, v in results.items()}, f, indent=2)


def check(flag_values=FLAGS):
    """--only_check_args: the evaluation's checks of its flags and config, nothing run."""
    from sknet_keras.trainers.experiment import check_config

    config_flags.check_command(lambda: resolve(flag_values), check_config)


def run():
    define_flags()
    cli.run(main, "sknet_keras.trainers.evaluate", check=check)


if __name__ == "__main__":
    run()
