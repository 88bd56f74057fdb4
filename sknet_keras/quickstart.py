"""`python -m sknet_keras.quickstart`: train an SKNet with `model.fit` on bundled data.

Needs no download: the images (stripes at three orientations, random frequency, phase,
colour and noise) are generated on the fly, so a fresh install can prove it trains.
"""

import time

import numpy as np
from sknet_keras import cli
from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "sknet26", "Registry model name.")
flags.DEFINE_integer("image_size", 32, "Image height and width.")
flags.DEFINE_integer("train_images", 384, "Number of training images.")
flags.DEFINE_integer("epochs", 4, "Training epochs.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("seed", 0, "Random seed.")

CLASSES = ("horizontal", "vertical", "diagonal")


def stripes_dataset(n, size, seed=0):
    """n RGB images in [0, 255] of oriented stripes, and their labels (0, 1, 2)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype("float32")
    labels = rng.integers(0, len(CLASSES), n)
    images = np.empty((n, size, size, 3), "float32")
    for i, label in enumerate(labels):
        coord = (yy, xx, (xx + yy) / np.sqrt(2))[label]
        wave = np.sin(2 * np.pi * coord / rng.uniform(3, 8) + rng.uniform(0, 2 * np.pi))
        colour = rng.uniform(0.3, 1.0, 3)
        img = 0.5 + 0.5 * wave[..., None] * colour + rng.normal(0, 0.15, (size, size, 3))
        images[i] = np.clip(img, 0, 1) * 255
    return images, labels


def main(argv):
    del argv
    import keras

    from sknet_keras.applications import build_model, preprocess_input

    keras.utils.set_random_seed(FLAGS.seed)
    size = FLAGS.image_size
    x, y = stripes_dataset(FLAGS.train_images + 128, size, FLAGS.seed)
    x = preprocess_input(x)
    x_train, y_train, x_val, y_val = x[:-128], y[:-128], x[-128:], y[-128:]

    model = build_model(FLAGS.model, input_shape=(size, size, 3), classes=len(CLASSES))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    print(f"{model.name}: {model.count_params():,} parameters, {size}x{size} inputs, "
          f"{len(x_train)} training images")
    start = time.time()
    model.fit(x_train, y_train, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs,
              validation_data=(x_val, y_val), verbose=2)
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    print(f"validation accuracy: {accuracy:.3f} (chance {1 / len(CLASSES):.3f}) "
          f"after {time.time() - start:.0f} s")


if __name__ == "__main__":
    cli.run(main, "sknet_keras.quickstart")
