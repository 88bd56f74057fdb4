"""`python -m sknet_keras.trainers.evaluate`: top-1 / top-5 of a weights file or checkpoint.

ImageNet protocol of the papers and timm: resize the shorter side to size / crop_fraction,
centre crop (224 from 256; also 320), bicubic, the model's own normalization.
"""

import json
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "sknet50", "Registry model name.")
flags.DEFINE_string("weights", None, "Weights file, or 'imagenet'.")
flags.DEFINE_string("checkpoint_dir", None, "A training --model_dir: its latest checkpoint.")
flags.DEFINE_enum("dataset", "imagenet2012", ["imagenet2012", "cifar10", "cifar100",
                                              "image_folder", "digits"], "Dataset.")
flags.DEFINE_string("data_dir", None, "tfds data_dir, or the image_folder root.")
flags.DEFINE_list("image_sizes", ["224", "320"], "Evaluation resolutions.")
flags.DEFINE_float("crop_fraction", 0.875, "Centre-crop fraction (0.875: 224 from 256).")
flags.DEFINE_enum("interpolation", "bicubic", ["bicubic", "bilinear"], "Resize method.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "bfloat16", "float16"], "Precision.")
flags.DEFINE_string("output", None, "Optional JSON file for the results.")


def evaluate(model_name, dataset, data_dir=None, weights=None, checkpoint_dir=None,
             image_sizes=(224,), crop_fraction=0.875, interpolation="bicubic", batch_size=64,
             precision="float32"):
    """{image size: {"top1", "top5", "examples"}}."""
    import keras
    import numpy as np
    import tensorflow as tf

    from sknet_keras.applications import build_model, preprocessing_mode
    from sknet_keras.registry import get_model_config
    from sknet_keras.trainers import data as data_lib

    if (weights is None) == (checkpoint_dir is None):
        raise ValueError("give exactly one of --weights and --checkpoint_dir")
    config = get_model_config(model_name)
    spec = data_lib.load_spec(dataset, data_dir)
    keras.mixed_precision.set_dtype_policy(
        {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[
            precision])
    results = {}
    for size in image_sizes:
        model = build_model(config, input_shape=(size, size, 3), classes=spec.num_classes,
                            classifier_activation=None,
                            weights=weights if weights is not None else None)
        if checkpoint_dir:
            latest = tf.train.latest_checkpoint(os.path.join(checkpoint_dir, "checkpoints"))
            if not latest:
                raise ValueError(f"no checkpoint in {checkpoint_dir!r}/checkpoints")
            tf.train.Checkpoint(model=model).restore(latest).expect_partial()
        pipeline = data_lib.PipelineConfig(image_size=size, crop_fraction=crop_fraction,
                                           eval_interpolation=interpolation,
                                           normalization=preprocessing_mode(config))
        ds = data_lib.make_dataset(spec, spec.eval_split, pipeline, batch_size, training=False)
        predict = tf.function(lambda x: model(x, training=False))
        top1 = top5 = n = 0
        for images, labels in ds:
            logits = np.asarray(predict(images), np.float32)
            truth = np.argmax(labels.numpy(), -1)
            best5 = np.argsort(-logits, axis=-1)[:, :5]
            top1 += int(np.sum(best5[:, 0] == truth))
            top5 += int(np.sum(np.any(best5 == truth[:, None], axis=-1)))
            n += len(truth)
        results[size] = {"top1": top1 / max(n, 1), "top5": top5 / max(n, 1), "examples": n}
        keras.backend.clear_session()
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        sizes = [int(s) for s in FLAGS.image_sizes]
    except ValueError:
        raise app.UsageError(f"--image_sizes: integers expected; got {FLAGS.image_sizes}")
    if any(s < 32 for s in sizes):
        raise app.UsageError(f"--image_sizes must be >= 32; got {sizes}")
    from sknet_keras.trainers.data import DataError

    try:
        results = evaluate(FLAGS.model, FLAGS.dataset, FLAGS.data_dir, FLAGS.weights,
                           FLAGS.checkpoint_dir, sizes, FLAGS.crop_fraction, FLAGS.interpolation,
                           FLAGS.batch_size, FLAGS.mixed_precision)
    except (ValueError, DataError) as e:
        raise app.UsageError(str(e)) from None
    for size, r in results.items():
        print(f"{FLAGS.model} {FLAGS.dataset} {size}x{size}: top-1 {100 * r['top1']:.2f} %, "
              f"top-5 {100 * r['top5']:.2f} % ({r['examples']} images)")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({str(k): v for k, v in results.items()}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
