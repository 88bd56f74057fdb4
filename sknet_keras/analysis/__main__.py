"""`python -m sknet_keras.analysis`: the paper's attention analysis (SKNet §6, Figs. 2–4).

Runs images, enlarged 1.0×, 1.5×, 2.0× (centre crop to 1/s, resized back), through a model
with SK units and writes, to --output_dir, summary.json / summary.csv (per image or per
class: per unit, per scale, the mean attention difference and each branch's mean
attention), attention.npz, and the paper's figures as PNGs. docs/analysis.md has examples.
"""

from sknet_keras import cli
from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

from sknet_keras.trainers.configs import DATASET_HELP
from sknet_keras.normalization import MODES
from sknet_keras.trainers.model_source import WEIGHTS_HELP

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Registry model with SK units (default: the run's with "
                    "--weights=<model_dir>, else sknet50).")
flags.DEFINE_string("weights", "imagenet", WEIGHTS_HELP)
flags.DEFINE_string("image_dir", None, "Folder of images, or of class/*.jpg sub-folders.")
flags.DEFINE_string("dataset", None, "A trainer dataset instead of --image_dir "
                    f"(per-class results): {DATASET_HELP}.")
flags.DEFINE_string("data_dir", None, "tfds data_dir, or the image_folder root.")
flags.DEFINE_string("split", None, "Dataset split (default: its evaluation split).")
flags.DEFINE_integer("max_examples", None, "Analyse only the first N images.")
flags.DEFINE_list("scales", ["1.0", "1.5", "2.0"], "Object enlargements (>= 1).")
flags.DEFINE_list("units", None, "SK units to analyse, e.g. SK_2_3,SK_3_4 (default: all).")
flags.DEFINE_list("branches", None, "larger,smaller: the branch indices to difference "
                  "(default: largest minus smallest receptive field).")
flags.DEFINE_string("channel_unit", None, "Unit of the per-channel figure (default: SK_3_4, "
                    "else the last unit of the second stage).")
flags.DEFINE_list("class_units", None, "Units of the per-class figure (default: the last "
                  "units of the first, second and last stages: SK_2_3,SK_3_4,SK_5_3).")
flags.DEFINE_string("output_dir", "attention_analysis", "Where the results go.")
flags.DEFINE_integer("batch_size", 32, "Images per batch (each at every scale).")
flags.DEFINE_integer("image_size", None, "Network resolution (default: the run's, else the "
                     "model's).")
flags.DEFINE_enum("normalization", None, list(MODES), "Input "
                  "normalization, as the trainer's input pipeline (default: the weights' or "
                  "the run's).")
flags.DEFINE_bool("per_image", None, "Per-image results in summary.json/csv (default: with "
                  "--image_dir only).")
flags.DEFINE_bool("figures", True, "Write the PNG figures (needs matplotlib).")
flags.DEFINE_integer("figure_images", 3, "Per-image figures for the first N images.")


def _source(f):
    from sknet_keras.analysis import sources

    if (f.image_dir is None) == (f.dataset is None):
        raise cli.UsageError("give exactly one of --image_dir and --dataset")
    if f.max_examples is not None and f.max_examples < 1:
        raise cli.UsageError(f"--max_examples must be >= 1; got {f.max_examples}")
    if f.image_dir is not None:
        return sources.image_folder(f.image_dir, f.max_examples)
    return sources.dataset(f.dataset, f.data_dir, f.split, f.max_examples)


def _branches(values):
    if values is None:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise cli.UsageError(f"--branches: two branch indices expected, e.g. 1,0; got "
                             f"{','.join(values)}") from None


def _check_flags(f):
    from sknet_keras.analysis.enlarge import check_scales

    check_scales(f.scales)
    if f.batch_size < 1:
        raise cli.UsageError(f"--batch_size must be >= 1; got {f.batch_size}")
    if f.figure_images < 0:
        raise cli.UsageError(f"--figure_images must be >= 0; got {f.figure_images}")
    if f.figures:
        try:
            import sknet_keras.analysis.figures  # noqa: F401
        except ImportError as e:
            raise cli.UsageError(f"{e} (or run with --nofigures)") from None


def _units(model, f):
    """(units, compare, channel unit, class units), checked against the model."""
    from sknet_keras.analysis.attention import default_channel_unit, default_class_units
    from sknet_keras.analysis.measure import resolve_units

    units, _, compare, _ = resolve_units(model, f.units, _branches(f.branches))
    channel = f.channel_unit or default_channel_unit(units)
    resolve_units(model, units, compare, channel)
    class_units = f.class_units or default_class_units(units)
    unknown = [u for u in class_units if u not in units]
    if unknown:
        raise cli.UsageError(f"--class_units: {', '.join(unknown)} not among the analysed "
                             f"units ({', '.join(units)})")
    return units, compare, channel, class_units


def _settings(model, weights, prep, class_units):
    """Every setting of the run, for summary.json."""
    import keras

    f = FLAGS
    return dict(model=model.name, weights=weights, image_dir=f.image_dir, dataset=f.dataset,
                data_dir=f.data_dir, split=f.split, max_examples=f.max_examples,
                batch_size=f.batch_size, class_units=class_units,
                backend=keras.backend.backend(), **vars(prep))


def main(argv):
    del argv
    import os

    from sknet_keras.analysis import loading, measure, report

    _check_flags(FLAGS)
    source = _source(FLAGS)
    model, prep, weights = loading.load(FLAGS.model, FLAGS.weights, FLAGS.image_size)
    units, compare, channel, class_units = _units(model, FLAGS)
    prep.normalization = FLAGS.normalization or prep.normalization
    if FLAGS.weights not in ("imagenet", None) and os.path.isfile(FLAGS.weights) \
            and FLAGS.image_size is None:
        print(f"note: analysing at {prep.image_size}x{prep.image_size}, {model.name}'s "
              "default; a weights file does not record the resolution it was trained at "
              "(--image_size to change it, or --weights=<the run's model_dir>)")
    print(f"{model.name}: {len(units)} SK units, {source.examples} images from "
          f"{source.description} at scales {','.join(FLAGS.scales)}")
    result = measure.collect(model, source, FLAGS.scales, prep.image_size, FLAGS.batch_size,
                             units, compare, channel, prep.crop_fraction, prep.interpolation,
                             prep.normalization)
    settings = dict(_settings(model, weights, prep, class_units), source=source.description)
    per_image = FLAGS.per_image if FLAGS.per_image is not None else bool(FLAGS.image_dir)
    data = report.write(result, FLAGS.output_dir, settings, per_image)
    written = ["summary.json", "summary.csv", "attention.npz"]
    if FLAGS.figures:
        from sknet_keras.analysis.figures import write_figures

        written += [os.path.basename(p) for p in write_figures(
            result, FLAGS.output_dir, class_units, FLAGS.figure_images)]
    _print_overall(data)
    print(f"wrote {', '.join(written)} to {FLAGS.output_dir}")


def _print_overall(data):
    scales = data["settings"]["scales"]
    print(f"mean attention difference ({data['difference']['definition']}):")
    print(f"  {'unit':<12}" + "".join(f"{str(s) + 'x':>10}" for s in scales))
    for unit, stats in data["overall"]["units"].items():
        print(f"  {unit:<12}" + "".join(f"{stats[str(float(s))]['difference']:>+10.4f}"
                                        for s in scales))


def run():
    cli.run(main, "sknet_keras.analysis")


if __name__ == "__main__":
    run()
