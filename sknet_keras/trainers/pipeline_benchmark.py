"""`python -m sknet_keras.trainers.pipeline_benchmark`: decode + augment images/s.

Measures the training input pipeline alone (tfds ImageFolder reading, fused JPEG decode and
crop, SENet augmentation, batching) so it can be compared with the model's training
images/s from `sknet_keras.benchmark`: the pipeline must not be the bottleneck. Without
--data_dir it writes ImageNet-sized synthetic JPEGs (500×375) to a temporary folder.
"""

import os
import tempfile
import time

import numpy as np
from sknet_keras import cli
from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

from sknet_keras.trainers.configs import FIELDS

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "image_folder root (default: synthetic JPEGs).")
flags.DEFINE_integer("images", 512, "Synthetic images to write.")
flags.DEFINE_integer("image_size", 224, "Output resolution.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("batches", 30, "Batches to time (after 3 warm-up batches).")
flags.DEFINE_enum("augment", "senet", list(FIELDS["data.augment"][0].metadata["choices"]),
                  "Augmentation recipe.")


def synthetic_folder(root, n, rng):
    import tensorflow as tf

    for i in range(n):
        d = os.path.join(root, "train", f"class{i % 10}")
        os.makedirs(d, exist_ok=True)
        # Smooth random images compress like photos (not like noise).
        small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        img = tf.image.resize(small[None], (375, 500), method="bicubic")[0]
        img = tf.cast(tf.clip_by_value(img, 0, 255), tf.uint8)
        with open(os.path.join(d, f"{i}.jpg"), "wb") as f:
            f.write(tf.io.encode_jpeg(img, quality=90).numpy())
    return root


def main(argv):
    del argv
    from sknet_keras.trainers import pipeline as pipeline_lib
    from sknet_keras.trainers.configs import DataConfig
    from sknet_keras.trainers.datasets import load_spec

    root = FLAGS.data_dir or synthetic_folder(tempfile.mkdtemp(), FLAGS.images,
                                              np.random.default_rng(0))
    spec = load_spec("image_folder", root)
    data = DataConfig(dataset="image_folder", image_size=FLAGS.image_size,
                      augment=FLAGS.augment)
    epoch, seen, start = 0, 0, None
    batches = 0
    while batches < FLAGS.batches + 3:
        for _ in pipeline_lib.make_dataset(spec, "train", data, FLAGS.batch_size, True,
                                           epoch=epoch):
            batches += 1
            if batches == 3:
                start = time.perf_counter()
            elif batches > 3:
                seen += FLAGS.batch_size
            if batches >= FLAGS.batches + 3:
                break
        epoch += 1
    rate = seen / (time.perf_counter() - start)
    print(f"train pipeline ({FLAGS.augment}, {FLAGS.image_size}x{FLAGS.image_size}, "
          f"{os.cpu_count()} CPUs): {rate:.0f} images/s")


if __name__ == "__main__":
    cli.run(main, "sknet_keras.trainers.pipeline_benchmark")
