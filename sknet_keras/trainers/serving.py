"""Files that serve images: the one export contract of the package, used by
`python -m sknet_keras.export`, the hub command's check and the trainer's `--export=litert,onnx`.

A served file takes RGB images in [0, 255] (float32, N × size × size × 3), applies the
weights' own preprocessing (`sknet_keras.normalization`, or a run's `--normalization`) in its
graph and gives logits (or probabilities). Each file is served once written, by its own
runtime (LiteRT interpreter, onnxruntime, TensorFlow), on test images and compared with the
float32 Keras model: a float file whose outputs differ from Keras' (1e-4 of the largest
logit) or whose top-1 differs is deleted and refused in one line; a quantized file reports
its top-1 agreement, and is refused under `min_agreement`.
"""

from sknet_keras import cli
from sknet_keras.atomic_files import atomic_path
from sknet_keras.extras import require

FORMATS = {"litert": ".tflite", "onnx": ".onnx", "saved_model": ""}
QUANTIZATIONS = ("none", "dynamic", "int8")


def serving_model(source, outputs="logits"):
    """Images in [0, 255] → preprocessing → network → logits or probabilities."""
    import keras

    from sknet_keras.applications import preprocess_input

    network = source.build(classifier_activation=None)
    mode = source.normalization

    class Preprocess(keras.layers.Layer):
        def call(self, x):
            return preprocess_input(x, mode=mode)

    images = keras.Input((source.size, source.size, 3), name="images")
    x = network(Preprocess(name=f"preprocess_{mode}")(images))
    if outputs == "probabilities":
        x = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(images, x, name=f"{network.name}_serving")


def check_images(size, count=8, seed=0):
    """Image-like test inputs in [0, 255] that differ from image to image in colour,
    contrast and structure (smooth gradients, blobs and noise)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        base = rng.uniform(0, 255, 3)
        slope = rng.uniform(-200, 200, (2, 3))
        image = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2)[..., None]
        image += blob * rng.uniform(-150, 150, 3) + rng.normal(0, rng.uniform(2, 30),
                                                              (size, size, 3))
        images.append(np.clip(image, 0, 255))
    return np.stack(images).astype("float32")


def runtime(path, fmt):
    """A function from inputs to an exported file's outputs, from the file's own runtime
    (loaded once)."""
    if fmt == "litert":
        Interpreter = require("ai_edge_litert.interpreter", "serving LiteRT files").Interpreter
        interpreter = Interpreter(model_path=path, num_threads=2)
        index = interpreter.get_input_details()[0]["index"]

        def run_litert(x):
            interpreter.resize_tensor_input(index, x.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(index, x)
            interpreter.invoke()
            return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

        return run_litert
    if fmt == "onnx":
        onnxruntime = require("onnxruntime", "serving ONNX files")
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    import tensorflow as tf

    served = tf.saved_model.load(path)
    return lambda x: served.serve(tf.constant(x)).numpy()


def serve(path, fmt, x):
    """The outputs of an exported file on `x`, from its own runtime."""
    return runtime(path, fmt)(x)


def _litert_options(quantize, calibration):
    import tensorflow as tf

    if quantize == "none":
        return {}
    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantize == "int8":
        def representative_dataset():
            for image in calibration:
                yield [image[None]]

        options["representative_dataset"] = representative_dataset
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
    return options


def export(source, fmt, output, outputs="logits", quantize="none", calibration=None,
           min_agreement=0.0):
    """Write `source` as `fmt` to `output` + suffix, served and checked; returns a report
    {path, bytes, max_abs_diff, top1_agreement}. A failed check deletes the file."""
    import numpy as np

    from sknet_keras.trainers import run_files

    if fmt not in FORMATS:
        raise cli.UsageError(f"--format: unknown format {fmt!r}; expected one of "
                             f"{', '.join(FORMATS)}")
    if quantize != "none" and fmt != "litert":
        raise cli.UsageError(f"--quantize={quantize} applies to --format=litert only")
    if quantize == "int8" and calibration is None:
        raise cli.UsageError("--quantize=int8 needs --calibration_data=DIR (images that "
                             "look like the ones the model will see)")
    model = serving_model(source, outputs)
    x = calibration[:8] if calibration is not None else check_images(source.size)
    want = np.asarray(model(x, training=False))
    path = output + FORMATS[fmt]
    with atomic_path(path) as tmp:
        keras_format = "tf_saved_model" if fmt == "saved_model" else fmt
        options = _litert_options(quantize, calibration) if fmt == "litert" else {}
        model.export(tmp, format=keras_format, verbose=False, **options)
        got = np.asarray(serve(tmp, fmt, x))
        diff = float(np.abs(got - want).max())
        agreement = float(np.mean(got.argmax(-1) == want.argmax(-1)))
        scale = float(np.abs(want).max())
        if quantize == "none" and (diff > 1e-4 * scale + 1e-6 or agreement < 1):
            raise ValueError(
                f"the {fmt} file of {source.model} does not give Keras' outputs (max "
                f"difference {diff:.3g} against outputs up to {scale:.3g}, top-1 agreement "
                f"{agreement:.0%}): not written")
        if agreement < min_agreement:
            raise ValueError(
                f"the {quantize}-quantized {fmt} file of {source.model} agrees with the float "
                f"model's top-1 on {agreement:.0%} of {len(x)} images, under "
                f"--min_agreement={min_agreement:g}: not written")
    return {"path": path, "bytes": run_files.record(path)["bytes"], "max_abs_diff": diff,
            "top1_agreement": agreement, "images": len(x)}
