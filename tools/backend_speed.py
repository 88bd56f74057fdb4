"""Inference and training speed of one model on each Keras backend, side by side in one run.

    python tools/backend_speed.py --model=sknet50 --batch_size=16 --backends=tensorflow,jax

Each backend runs in its own process (a Keras backend is fixed at import) and times
`predict_on_batch` and `train_on_batch` (SGD) of the model and of Keras' ResNet50 on the same
random batch: median of `--repeats` calls after two untimed ones. Printed as img/s and as
ratios (to ResNet50 on the same backend, and to TensorFlow), so that the figures of one
machine say something on another. `python -m sknet_keras.benchmark` is the TensorFlow-only
benchmark with memory and compiled modes; this tool exists because it cannot switch backends.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _time(fn, repeats):
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _child(args):
    import keras
    import numpy as np

    from sknet_keras.applications import build_model

    shape = (args.image_size, args.image_size, 3)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (args.batch_size, *shape)).astype("float32")
    y = np.arange(args.batch_size) % 1000
    out = {"backend": keras.backend.backend()}
    for name in (args.model, "resnet50"):
        if name == "resnet50":
            model = keras.applications.ResNet50(weights=None, input_shape=shape)
        else:
            model = build_model(name, input_shape=shape, weights=None)
        model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
        out[name] = {
            "predict_img_s": args.batch_size / _time(lambda: model.predict_on_batch(x),
                                                     args.repeats),
            "train_img_s": args.batch_size / _time(lambda: model.train_on_batch(x, y),
                                                   args.repeats),
        }
        keras.backend.clear_session()
    print("RESULT" + json.dumps(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sknet50")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--output", default=None, help="Also write the results as JSON here.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    results = {}
    for backend in args.backends.split(","):
        cmd = [sys.executable, __file__, "--child", f"--model={args.model}",
               f"--batch_size={args.batch_size}", f"--image_size={args.image_size}",
               f"--repeats={args.repeats}"]
        proc = subprocess.run(cmd, env=dict(os.environ, KERAS_BACKEND=backend),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            sys.exit(f"backend {backend} failed: {last}")
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
        results[backend] = json.loads(line[len("RESULT"):])
    base = results.get("tensorflow")
    print(f"{args.model}, batch {args.batch_size}, {args.image_size}², float32")
    print(f"{'backend':12s} {'mode':8s} {'img/s':>8s} {'vs ResNet50':>12s} {'vs TF':>7s}")
    for backend, res in results.items():
        for mode in ("predict", "train"):
            key = f"{mode}_img_s"
            speed = res[args.model][key]
            vs_tf = f"{speed / base[args.model][key]:.2f}" if base else "-"
            print(f"{backend:12s} {mode:8s} {speed:8.2f} "
                  f"{speed / res['resnet50'][key]:12.2f} {vs_tf:>7s}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
