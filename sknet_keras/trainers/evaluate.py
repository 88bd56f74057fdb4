"""`python -m sknet_keras.trainers.evaluate`: top-1 / top-5 of a training run or weights file.

`--model_dir=DIR` evaluates a trainer run's latest checkpoint with the run's own model,
dataset, image size and normalization (from `DIR/config.json`); flags given override them,
with a note. `--weights=FILE|imagenet` evaluates weights with the flags' settings.

ImageNet protocol of the papers and timm: resize the shorter side to size / crop_fraction,
centre crop (224 from 256; also 320), the interpolation of the weights, the model's own
normalization.
"""

import json
import os

from sknet_keras import cli
from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

from sknet_keras.trainers import run_files
from sknet_keras.trainers.configs import DATASET_HELP, PRECISIONS, default_recipe, recipe
from sknet_keras.trainers.evaluation import evaluate  # noqa: F401 (the command's function)
from sknet_keras.weights.files import not_a_weights_file

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A training run's --model_dir: its latest checkpoint "
                    "and its config.json.")
flags.DEFINE_string("checkpoint_dir", None, "Alias of --model_dir.")
flags.DEFINE_string("weights", None, "Weights file, or 'imagenet'.")
flags.DEFINE_string("model", None, "Registry model name (default: the run's, else sknet50).")
flags.DEFINE_string("dataset", None, f"Dataset (default: the run's, else imagenet2012): "
                    f"{DATASET_HELP}.")
flags.DEFINE_string("data_dir", None, "tfds data_dir, or the image_folder root.")
flags.DEFINE_list("image_sizes", None, "Evaluation resolutions (default: the run's, else "
                  "224,320 on ImageNet, else the dataset's recipe's).")
flags.DEFINE_float("crop_fraction", None, "Centre-crop fraction (default: the weights', else "
                   "0.875: 224 from 256).")
flags.DEFINE_enum("interpolation", None, ["bicubic", "bilinear"], "Resize method (default: "
                  "the weights', else bicubic).")
flags.DEFINE_enum("normalization", None, ["torch", "caffe", "senet", "tf"], "Input "
                  "normalization (default: the run's, else the weights').")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_enum("mixed_precision", "float32", list(PRECISIONS), "Precision.")
flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def resolve(flag_values):
    """(ExperimentConfig, image sizes, model_dir) from the flags and the run's config.json."""
    from sknet_keras.presets import evaluation_defaults
    from sknet_keras.registry import get_model_config
    from sknet_keras.trainers.configs import ExperimentConfig, read_config

    f = flag_values
    model_dir = f.model_dir or f.checkpoint_dir
    if f.model_dir and f.checkpoint_dir and f.model_dir != f.checkpoint_dir:
        raise cli.UsageError("--model_dir and --checkpoint_dir name different runs")
    run = read_config(model_dir) if model_dir else None
    if model_dir and run is None:
        if not os.path.isdir(model_dir):
            raise cli.UsageError(f"--model_dir: {model_dir} does not exist")
        if f.model is None or f.dataset is None or f.image_sizes is None:
            raise cli.UsageError(
                f"{model_dir} has no config.json (a run of an older version?): give --model, "
                "--dataset and --image_sizes")
    if f.weights not in (None, "imagenet") and not os.path.isfile(f.weights):
        raise cli.UsageError(f"--weights: {not_a_weights_file(f.weights)}")
    if f.weights not in (None, "imagenet"):
        problem = run_files.check_against_its_run(f.weights)
        if problem:
            raise cli.UsageError(f"--weights: {problem}")
    if run is None:
        config = ExperimentConfig()
        config.model.name = f.model or "sknet50"
        config.data.dataset = f.dataset or "imagenet2012"
        if config.data.dataset == "imagenet2012":
            sizes = [224, 320]
        else:  # the resolution the dataset's recipe trains at
            name = default_recipe(config.data.dataset)
            sizes = [recipe(name).data.image_size]
            if f.image_sizes is None:
                print(f"note: evaluating at {sizes[0]}x{sizes[0]}, the {name} recipe's size "
                      "(--image_sizes to change it)")
    else:
        config, sizes = ExperimentConfig.from_dict(run.to_dict()), [run.data.image_size]
        for flag, field in (("model", "model.name"), ("dataset", "data.dataset"),
                            ("data_dir", "data.data_dir"),
                            ("normalization", "data.normalization")):
            value, (section, name) = f[flag].value, field.split(".")
            if value is not None and value != getattr(getattr(config, section), name):
                print(f"note: --{flag}={value} overrides the run's {field}="
                      f"{getattr(getattr(config, section), name)!r}")
                setattr(getattr(config, section), name, value)
        if f.image_sizes is not None:
            print(f"note: --image_sizes={','.join(f.image_sizes)} overrides the run's "
                  f"image size {run.data.image_size}")
    try:
        model_config = get_model_config(config.model.name)
    except ValueError as e:
        raise cli.UsageError(f"--model: {e}") from None
    if run is not None and model_config.name != run.model.name:
        raise cli.UsageError(f"{model_dir} holds a {run.model.name} run; its checkpoint "
                             f"cannot be evaluated as {model_config.name}")
    if f.image_sizes is not None:
        try:
            sizes = [int(s) for s in f.image_sizes]
        except ValueError:
            raise cli.UsageError(f"--image_sizes: integers expected; got {f.image_sizes}") \
                from None
    if any(s < 32 for s in sizes):
        raise cli.UsageError(f"--image_sizes must be >= 32; got {sizes}")
    if f.normalization is not None and run is None:
        config.data.normalization = f.normalization
    crop, interpolation = evaluation_defaults(model_config.name if f.weights == "imagenet"
                                              else None)
    config.data.crop_fraction = f.crop_fraction or (
        config.data.crop_fraction if run is not None else crop)
    config.data.eval_interpolation = f.interpolation or (
        config.data.eval_interpolation if run is not None else interpolation)
    return config, sizes, model_dir


def main(argv):
    del argv
    from sknet_keras.trainers import datasets

    config, sizes, model_dir = resolve(FLAGS)
    run_precision = config.runtime.precision if model_dir else None
    if run_precision and run_precision != FLAGS.mixed_precision:
        print(f"note: evaluating in {FLAGS.mixed_precision}; the run trained and evaluated in "
              f"{run_precision} (--mixed_precision={run_precision} reproduces its "
              "result.json)")
    spec_classes = datasets.load_spec(config.data.dataset, config.data.data_dir).num_classes
    if config.model.num_classes not in (None, spec_classes):
        raise cli.UsageError(
            f"the run's model has {config.model.num_classes} classes, {config.data.dataset} "
            f"has {spec_classes}: evaluate it on its own dataset")
    results = evaluate(config, sizes, FLAGS.weights, model_dir, FLAGS.batch_size,
                       FLAGS.mixed_precision)
    for size, r in results.items():
        print(f"{config.model.name} {config.data.dataset} {size}x{size}: top-1 "
              f"{100 * r['top1']:.2f} %, top-5 {100 * r['top5']:.2f} % ({r['examples']} images)")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({str(k): v for k, v in results.items()}, f, indent=2)


def run():
    cli.run(main, "sknet_keras.trainers.evaluate")


if __name__ == "__main__":
    run()
