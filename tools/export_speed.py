"""Inference speed of the exported files against Keras, side by side in one run.

    python tools/export_speed.py --models=sknet50,shufflenet_v2_x1_0_sk --batch_sizes=1,16

For each model (random weights; speed does not depend on them) this writes the LiteRT and
ONNX files with `sknet_keras.export` (images in [0, 255], preprocessing in the graph) and
times, on one random batch: Keras `predict_on_batch`, a `tf.function` of the model,
the LiteRT interpreter (float, dynamic-range and full-int8 files) and onnxruntime, each with
`--threads` threads. Median of `--repeats` calls after two untimed ones; printed as ms per
batch and as the ratio of Keras predict's time to each (above 1: faster than Keras), so
that the figures of one machine say something on another. Run it with the CPU kernels you
deploy with (`TF_ENABLE_ONEDNN_OPTS`).
"""

import argparse
import json
import os
import sys
import tempfile


from backend_speed import _time  # this folder is on sys.path when the tool runs


def _median_ms(fn, repeats):
    return 1000 * _time(fn, repeats)


def measure(name, batch_sizes, threads, repeats, folder):
    import numpy as np
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from sknet_keras import export

    source = export.resolve(name, "imagenet")
    source.weights = None  # random weights: no download; the speed is the same
    model = export.serving_model(source)
    function = tf.function(lambda x: model(x, training=False))
    base = os.path.join(folder, name)
    for fmt in ("litert", "onnx"):
        model.export(base + export.FORMATS[fmt], format=fmt, verbose=False)
    calibration = export.check_images(source.size, 8)
    for quantize in ("dynamic", "int8"):  # int8: calibrated on image-like test images
        model.export(f"{base}_{quantize}.tflite", format="litert", verbose=False,
                     **export._litert_options(quantize, calibration))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(base + ".onnx", options,
                                           providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    rows = []
    for batch in batch_sizes:
        x = np.random.default_rng(0).uniform(0, 255, (batch, source.size, source.size, 3))
        x = x.astype("float32")

        def litert(path):
            interpreter = Interpreter(model_path=path, num_threads=threads)
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, x.shape)
            interpreter.allocate_tensors()

            def invoke():
                interpreter.set_tensor(index, x)
                interpreter.invoke()

            return invoke

        timings = {
            "keras_predict": _median_ms(lambda: model.predict_on_batch(x), repeats),
            "tf_function": _median_ms(lambda: function(x).numpy(), repeats),
            "litert": _median_ms(litert(base + ".tflite"), repeats),
            "litert_dynamic": _median_ms(litert(base + "_dynamic.tflite"), repeats),
            "litert_int8": _median_ms(litert(base + "_int8.tflite"), repeats),
            "onnxruntime": _median_ms(lambda: session.run(None, {input_name: x}), repeats),
        }
        rows.append({"model": name, "batch": batch, "ms": timings})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sknet50,shufflenet_v2_x1_0_sk")
    parser.add_argument("--batch_sizes", default="1,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", default="export_speed.json")
    args = parser.parse_args()
    from sknet_keras import cli  # noqa: F401 (quiets TensorFlow's start-up)
    from sknet_keras.layers.accel import kernel_support

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            rows += measure(name, [int(b) for b in args.batch_sizes.split(",")],
                            args.threads, args.repeats, folder)
    print(f"{os.cpu_count()} CPUs, {kernel_support.describe()}, {args.threads} threads")
    print(f"{'model':<24}{'batch':>6}" + "".join(f"{k:>26}" for k in rows[0]["ms"]))
    for row in rows:
        keras_ms = row["ms"]["keras_predict"]
        print(f"{row['model']:<24}{row['batch']:>6}" + "".join(
            f"{ms:>14.1f} ms ({keras_ms / ms:4.2f}x)" for ms in row["ms"].values()))
    with open(args.output, "w") as f:
        json.dump({"rows": rows, "threads": args.threads,
                   "kernels": kernel_support.describe()}, f, indent=2)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
