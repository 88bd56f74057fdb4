"""`python -m sknet_keras`: the model table, measured from freshly built models."""

import sys

from sknet_keras import cli
from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "Registry names to list (default: all).")
flags.DEFINE_integer("image_size", None, "Input resolution for the multiply-add count "
                     "(default: each model's own, 224; 32 for the CIFAR networks).")


def model_table(names, image_size=None):
    """Rows of (name, trainable params, total params, GMACs, published error %, description,
    image size, classes): with each model's classifier for the dataset of its figures."""
    import keras

    from sknet_keras.applications import build_model
    from sknet_keras.complexity import count_macs
    from sknet_keras.registry import get_entry

    rows = []
    for name in names:
        entry = get_entry(name)
        size = image_size or entry.config.default_size
        model = build_model(entry.config, input_shape=(size, size, 3), classes=entry.classes)
        trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
        error = entry.paper.top1_error if entry.paper else None
        rows.append((entry.name, trainable, model.count_params(), count_macs(model) / 1e9,
                     error, entry.description, size, entry.classes))
        keras.backend.clear_session()
    return rows


def main(argv):
    from sknet_keras.registry import list_models

    del argv
    rows = model_table(FLAGS.models or list_models(), FLAGS.image_size)
    print(f"{'model':<22}{'input':>6}{'classes':>8}{'trainable':>13}{'total':>13}"
          f"{'GMACs':>9}{'published err %':>17}  description")
    for name, trainable, total, gmacs, err, desc, size, classes in rows:
        err = f"{err:.2f}" if err is not None else "-"
        print(f"{name:<22}{size:>6}{classes:>8}{trainable:>13,}{total:>13,}{gmacs:>9.3f}"
              f"{err:>17}  {desc}")
    print("published err %: top-1 error on ImageNet (CIFAR-10 for the CIFAR networks), "
          "docs/models/ for the sources")
    sys.stdout.flush()


def run():
    """Console-script entry point (`sknet-keras`)."""
    cli.run(main, "sknet_keras")


if __name__ == "__main__":
    run()
