"""`python -m sknet_keras.hub`: a registry model with ImageNet weights, a weights file or a
training run's weights as a keras-hub preset directory (ready to upload to Kaggle or the
Hugging Face Hub).

    python -m sknet_keras.hub --model=sknet50 --weights=imagenet --output=sknet50_imagenet
    python -m sknet_keras.hub --weights=runs/default --output=my_preset

The preset holds an `ImageClassifier` (backbone, head, and a preprocessor that resizes RGB
images in [0, 255] and applies the weights' normalization) and its model card (README.md:
licence, datasets, parameters, multiply-adds, published top-1, usage, citation); upload it
with `sknet_keras.hub.upload_preset`, which keeps the card. Before it is put in place it is
loaded back with `keras_hub.models.ImageClassifier.from_preset` and its outputs compared
with this package's network on test images; a preset that differs is not written.
"""

import os

from sknet_keras import cli
from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

from sknet_keras import file_lock
from sknet_keras.atomic_files import atomic_path
from sknet_keras.normalization import MODES
from sknet_keras.trainers.model_source import WEIGHTS_HELP

FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("model", None, "Registry model name (default: the run's with a run "
                        "folder as --weights, else sknet50).")
    flags.DEFINE_string("weights", "imagenet", WEIGHTS_HELP)
    flags.DEFINE_string("output", None, "The preset directory to write (must not exist, or be "
                        "empty).")
    flags.DEFINE_integer("image_size", None, "The preprocessor's image size (default: the run's, "
                         "else the model's).")
    flags.DEFINE_enum("normalization", None, list(MODES), "The "
                      "preprocessor's normalization (default: the run's, else the weights').")


def write_preset(source, output):
    """Write `source` (an `export.Source`) as a keras-hub preset at `output`, checked by
    loading it back; returns (max difference to Keras, largest output, top-1 agreement)."""
    import keras_hub
    import numpy as np

    from sknet_keras.export import check_images, serving_model
    from sknet_keras.hub.building import image_classifier

    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise cli.UsageError(f"--output: {output} exists and is not an empty folder (choose "
                             "another, or remove it)")
    import keras

    reference = serving_model(source)  # preprocess_input + the network: Keras' own outputs
    network = next(layer for layer in reference.layers if isinstance(layer, keras.Model))
    classifier = image_classifier(source.model, classes=source.classes,
                                  image_size=source.size, normalization=source.normalization,
                                  network=network)
    with atomic_path(output) as tmp:  # replaces an empty folder (checked above)
        classifier.save_to_preset(tmp)
        loaded = keras_hub.models.ImageClassifier.from_preset(tmp)
        x = check_images(source.size)
        want = np.asarray(reference(x, training=False))
        got = np.asarray(loaded.predict(x, batch_size=len(x), verbose=0))
        diff, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
        agreement = float(np.mean(got.argmax(-1) == want.argmax(-1)))
        if diff > 1e-4 * scale + 1e-6 or agreement < 1:
            raise ValueError(f"the keras-hub preset of {source.model} does not give Keras' "
                             f"outputs (max difference {diff:.3g} against outputs up to "
                             f"{scale:.3g}, top-1 agreement {agreement:.0%}): not written")
        _write_card(source, tmp, output)
    return diff, scale, agreement


def _write_card(source, folder, output):
    from sknet_keras.hub.model_card import CARD_FILE, card_figures, model_card

    figures = card_figures(source.model, source.classes, source.size)
    if source.run is not None:
        weights = ("a training run's newest checkpoint" if source.checkpoint else
                   "a training run's final weights")
        dataset = source.run.data.dataset
    elif not os.path.isfile(source.weights):  # "imagenet" or "architecture.tag"
        weights, dataset = source.weights, None
    else:
        weights, dataset = f"the weights file {os.path.basename(source.weights)}", None
    text = model_card(source.model, figures, source.size, source.normalization, weights,
                      dataset, handle=os.path.basename(os.path.abspath(output)))
    with open(os.path.join(folder, CARD_FILE), "w", encoding="utf-8") as f:  # the folder
        f.write(text)  # is renamed into place whole


def main(argv):
    del argv
    from sknet_keras.export import resolve, run_in_use

    if not FLAGS.output:
        raise cli.UsageError("--output: give the preset directory to write")
    source = resolve(FLAGS.model, FLAGS.weights, FLAGS.image_size, FLAGS.normalization)
    with run_in_use(source), file_lock.writing(FLAGS.output, "sknet_keras.hub"):
        diff, scale, _ = write_preset(source, FLAGS.output)
    print(f"wrote the keras-hub preset {FLAGS.output}: {source.model}, {source.classes} classes, "
          f"{source.size}x{source.size} RGB images in [0, 255], {source.normalization} "
          f"preprocessing; loaded back with ImageClassifier.from_preset: max difference to "
          f"Keras {diff:.2g} (outputs up to {scale:.3g}), top-1 identical")


if __name__ == "__main__":
    _define_flags()
    cli.run(main, "sknet_keras.hub")
