"""python -m sknet_keras.convert --source=timm --model=sknet50 --input=X --output=Y"""

from absl import app, flags

from sknet_keras.registry import list_models

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", None, ["timm", "caffe"], "Release the input comes from.")
flags.DEFINE_enum("model", None, list_models(), "Registry model the checkpoint holds.")
flags.DEFINE_string("input", None, "timm .safetensors/.pth or Caffe .caffemodel file.")
flags.DEFINE_string("output", None, "Weights file to write (load with weights=PATH).")
flags.mark_flags_as_required(["source", "model", "input", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from sknet_keras.convert import convert

    try:
        model = convert(FLAGS.source, FLAGS.model, FLAGS.input, FLAGS.output)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    print(f"wrote {FLAGS.output}: {FLAGS.model} from {FLAGS.source}, "
          f"{model.count_params():,} values, {model.output_shape[-1]} classes")


if __name__ == "__main__":
    app.run(main)
