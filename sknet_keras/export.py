"""`python -m sknet_keras.export`: a registry model, ImageNet weights, a weights file or a
training run as a LiteRT, ONNX or SavedModel file that serves images.

    python -m sknet_keras.export --model=sknet50 --weights=imagenet --format=litert
    python -m sknet_keras.export --weights=runs/default --format=onnx,saved_model
    python -m sknet_keras.export --weights=runs/default --format=litert --quantize=int8 \\
        --calibration_data=some/images
    python -m sknet_keras.export --weights=runs/default --format=litert --quantize=int8 \\
        --calibration_data=validation --evaluate    # the run's own validation split

Every file takes RGB images in [0, 255] (float32, N × size × size × 3) and applies the
weights' own preprocessing (`preprocess_input`, or the run's `--normalization`) in its graph;
it gives logits, or probabilities with `--outputs=probabilities`. Each file is served once
written (LiteRT interpreter, onnxruntime, TensorFlow) on test images and compared with
Keras: a float file whose outputs differ from Keras' (1e-4 of the largest logit) or whose
top-1 differs is deleted and refused in one line; a quantized file reports its top-1
agreement with the float model, and is refused under `--min_agreement`. `--evaluate` (with a
run folder) serves each file on the run's whole validation split and prints its top-1.
"""

import contextlib
import os

from sknet_keras import cli
from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

from sknet_keras import file_lock
from sknet_keras.normalization import MODES
from sknet_keras.trainers.model_source import WEIGHTS_HELP
from sknet_keras.trainers.serving import (FORMATS, QUANTIZATIONS, check_images,  # noqa: F401
                                          export, runtime, serve, serving_model)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

FLAGS = flags.FLAGS


def _define_flags():
    """The command's flags, defined when it runs (importing this module defines none, so
    that a process can hold it beside the trainer, whose flags share names)."""
    flags.DEFINE_string("model", None, "Registry model name (default: the run's with a run "
                        "folder as --weights, else sknet50).")
    flags.DEFINE_string("weights", "imagenet", WEIGHTS_HELP)
    flags.DEFINE_list("format", ["saved_model"], "One or more of: " + ", ".join(FORMATS))
    flags.DEFINE_string("output", None, "Output path without suffix (default: the model's name "
                        "in the current folder; a run's exports go beside its files).")
    flags.DEFINE_enum("outputs", "logits", ["logits", "probabilities"], "What the file gives.")
    flags.DEFINE_integer("image_size", None, "Input size (default: the run's, else the model's).")
    flags.DEFINE_enum("normalization", None, list(MODES), "Preprocessing "
                      "in the file (default: the run's, else the weights').")
    flags.DEFINE_enum("quantize", "none", list(QUANTIZATIONS), "LiteRT only: dynamic-range "
                      "(int8 weights) or full int8 (weights and activations; needs "
                      "--calibration_data).")
    flags.DEFINE_string("calibration_data", None, "Folder of JPEG / PNG images (searched "
                        "recursively) for int8 calibration, or 'validation': the run's own "
                        "validation split (--weights=RUN_DIR); also the check images.")
    flags.DEFINE_bool("evaluate", False, "With --weights=RUN_DIR: serve each file on the run's "
                      "whole validation split and print its top-1 beside the Keras model's.")
    flags.DEFINE_integer("calibration_steps", 64, "Images used for int8 calibration.")
    flags.DEFINE_float("min_agreement", 0.0, "A quantized file whose top-1 agrees with the float "
                       "model on fewer of the check images is refused.")


def resolve(model=None, weights="imagenet", image_size=None, normalization=None):
    """The `ModelSource` of the flags (`sknet_keras.trainers.model_source`: one meaning of
    --model / --weights in every command)."""
    from sknet_keras.trainers.model_source import resolve as resolve_source

    return resolve_source(model, weights, image_size, normalization)


def default_output(source):
    """Where the export goes without --output: the run's exported/, else the model's name."""
    return os.path.join(source.run_dir, "exported") if source.run_dir else source.model


@contextlib.contextmanager
def run_in_use(source):
    """Hold the run folder's lock while exporting from it (and, by default, into it): a
    training or evaluation in progress there refuses the export, in one line."""
    if source.run is None:
        yield
        return
    from sknet_keras.trainers.experiment import RUN_LOCK

    folder = source.run_dir
    try:
        with file_lock.hold(os.path.join(folder, RUN_LOCK), "exporting", wait=False):
            yield
    except file_lock.LockedError as e:
        raise cli.UsageError(f"--weights: {file_lock.describe(e.holder)} is using the run "
                             f"{folder}; nothing was written: wait for it to finish") from None


def read_images(folder, size, limit):
    """Up to `limit` images of `folder` (recursively, sorted) resized to size × size, RGB
    in [0, 255]."""
    import numpy as np
    import tensorflow as tf

    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(folder)
                   for f in files if f.lower().endswith(IMAGE_SUFFIXES))
    if not paths:
        raise cli.UsageError(f"--calibration_data: no JPEG or PNG images in {folder}")
    images = []
    for path in paths[:limit]:
        try:
            image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                                       expand_animations=False)
        except tf.errors.OpError:
            raise cli.UsageError(f"--calibration_data: {path} is not a readable image") from None
        images.append(tf.image.resize(tf.cast(image, tf.float32), (size, size)).numpy())
    return np.stack(images).astype("float32")


def validation_images(source, limit=None):
    """(images in [0, 255], labels) of the run's validation split, prepared as the trainer's
    evaluation prepares them (resize, centre crop; the normalization is the file's own)."""
    import numpy as np

    from sknet_keras.trainers import datasets, pipeline

    if source.run is None:
        raise cli.UsageError("the validation split is a training run's: give --weights=RUN_DIR")
    data = source.run.data
    spec = datasets.load_spec(data.dataset, data.data_dir)
    ds = datasets.records(spec, spec.eval_split, shuffle_files=False, seed=0)
    if limit:
        ds = ds.take(limit)
    ds = ds.map(lambda encoded, label, name: (
        pipeline.eval_image(encoded, source.size, data.crop_fraction, data.eval_interpolation),
        label))
    images, labels = zip(*((x.numpy(), int(y)) for x, y in ds))
    return np.stack(images).astype("float32"), np.asarray(labels)


def evaluate(path, fmt, source, images, labels, batch_size=64):
    """Top-1 accuracy of an exported file and of the float32 Keras serving model on
    `images` (in [0, 255]) with `labels`."""
    import numpy as np

    model, file_outputs = serving_model(source), runtime(path, fmt)
    served, keras_out = [], []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        served.append(np.asarray(file_outputs(x)))
        keras_out.append(np.asarray(model(x, training=False)))
    return (float(np.mean(np.concatenate(served).argmax(-1) == labels)),
            float(np.mean(np.concatenate(keras_out).argmax(-1) == labels)))


def main(argv):
    del argv
    source = resolve(FLAGS.model, FLAGS.weights, FLAGS.image_size, FLAGS.normalization)
    unknown = [f for f in FLAGS.format if f not in FORMATS]
    if unknown:
        raise cli.UsageError(f"--format: unknown format(s) {unknown}; expected "
                             f"{', '.join(FORMATS)}")
    if FLAGS.quantize != "none" and FLAGS.format != ["litert"]:
        raise cli.UsageError(f"--quantize={FLAGS.quantize} applies to --format=litert only")
    calibration = None
    if FLAGS.calibration_data == "validation":
        calibration = validation_images(source, max(FLAGS.calibration_steps, 8))[0]
    elif FLAGS.calibration_data:
        calibration = read_images(FLAGS.calibration_data, source.size,
                                  max(FLAGS.calibration_steps, 8))
    validation = validation_images(source) if FLAGS.evaluate else None
    output = FLAGS.output or default_output(source)
    if FLAGS.quantize != "none" and not FLAGS.output:
        output += f"_{FLAGS.quantize}"
    for fmt in FLAGS.format:
        with run_in_use(source), file_lock.writing(output + FORMATS[fmt], "sknet_keras.export"):
            report = export(source, fmt, output, FLAGS.outputs, FLAGS.quantize, calibration,
                            FLAGS.min_agreement)
        print(f"wrote {report['path']} ({report['bytes'] / 2**20:.1f} MiB): "
              f"{source.model}, {source.size}x{source.size} images in [0, 255], "
              f"{source.normalization} preprocessing, {FLAGS.outputs}; served on "
              f"{report['images']} images: max difference to Keras "
              f"{report['max_abs_diff']:.2g}, top-1 agreement {report['top1_agreement']:.0%}")
        if validation is not None:
            file_top1, keras_top1 = evaluate(report["path"], fmt, source, *validation)
            print(f"top-1 on the run's {len(validation[1])} validation images: "
                  f"{report['path']} {file_top1:.4f}, the Keras model {keras_top1:.4f}")


if __name__ == "__main__":
    _define_flags()
    cli.run(main, "sknet_keras.export")
