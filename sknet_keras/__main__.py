"""`python -m sknet_keras`: the model table, measured from freshly built models."""

import sys

from sknet_keras import cli
from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "Registry names to list (default: all).")
flags.DEFINE_integer("image_size", 224, "Input resolution for the multiply-add count.")


def model_table(names, image_size=224):
    """Rows of (name, trainable params, total params, GMACs, paper top-1 error)."""
    import keras

    from sknet_keras.applications import build_model
    from sknet_keras.complexity import count_macs
    from sknet_keras.registry import get_entry

    rows = []
    for name in names:
        entry = get_entry(name)
        model = build_model(entry.config, input_shape=(image_size, image_size, 3))
        trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
        error = entry.paper.top1_error if entry.paper else None
        rows.append((entry.name, trainable, model.count_params(), count_macs(model) / 1e9,
                     error, entry.description))
        keras.backend.clear_session()
    return rows


def main(argv):
    from sknet_keras.registry import list_models

    del argv
    rows = model_table(FLAGS.models or list_models(), FLAGS.image_size)
    print(f"{'model':<20}{'trainable':>13}{'total':>13}{'GMACs@' + str(FLAGS.image_size):>11}"
          f"{'paper top-1 err':>17}  description")
    for name, trainable, total, gmacs, err, desc in rows:
        err = f"{err:.2f}" if err is not None else "-"
        print(f"{name:<20}{trainable:>13,}{total:>13,}{gmacs:>11.3f}{err:>17}  {desc}")
    sys.stdout.flush()


def run():
    """Console-script entry point (`sknet-keras`)."""
    cli.run(main, "sknet_keras")


if __name__ == "__main__":
    run()
