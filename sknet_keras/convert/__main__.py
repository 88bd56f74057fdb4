"""python -m sknet_keras.convert --source=timm --model=sknet50 --input=X --output=Y"""

from sknet_keras import cli
from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

from sknet_keras.convert.releases import SOURCES
from sknet_keras.registry import list_models

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", None, sorted(SOURCES), "Release the input comes from.")
flags.DEFINE_enum("model", None, list_models(), "Registry model the checkpoint holds.")
flags.DEFINE_string("input", None, "timm .safetensors / .pth / .pth.tar, or Caffe "
                    ".caffemodel file.")
flags.DEFINE_string("output", None, "Weights file to write (load with weights=PATH).")
flags.mark_flags_as_required(["source", "model", "input", "output"])


def main(argv):
    del argv
    from sknet_keras import file_lock
    from sknet_keras.convert import convert

    with file_lock.writing(FLAGS.output, "sknet_keras.convert"):
        model = convert(FLAGS.source, FLAGS.model, FLAGS.input, FLAGS.output)
    print(f"wrote {FLAGS.output}: {FLAGS.model} from {FLAGS.source}, "
          f"{model.count_params():,} values, {model.output_shape[-1]} classes")


if __name__ == "__main__":
    cli.run(main, "sknet_keras.convert")
