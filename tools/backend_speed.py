"""Inference and training speed of one model on each Keras backend, side by side in one run.

    python tools/backend_speed.py --model=sknet50 --batch_size=16 --backends=tensorflow,jax

Each backend runs in its own process (a Keras backend is fixed at import; `tensorflow:eigen`
and `tensorflow:onednn` choose TensorFlow's CPU kernels, `TF_ENABLE_ONEDNN_OPTS`) and times
`predict_on_batch` and `train_on_batch` (SGD) of the model and of Keras' ResNet50 on the same
random batch: median of `--repeats` calls after two untimed ones. Printed as img/s and as
ratios (to ResNet50 on the same backend, and to TensorFlow), so that the figures of one
machine say something on another. `python -m sknet_keras.benchmark` is the TensorFlow-only
benchmark with memory and compiled modes; this tool exists because it cannot switch backends.

`--timm=skresnext50_32x4d` adds the PyTorch reference, timm's model of the same
architecture, eager and `torch.compile`d, against timm's ResNet50 (needs `pip install timm`).
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


def _import_timm():
    """timm, importing torchvision even where its wheel's C++ ops do not load (a CUDA build of
    torchvision beside a CPU build of torch): timm needs only torchvision's Python parts, and
    torchvision's import then fails merely on registering two NMS ops it could not load."""
    try:
        import timm
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        import torch

        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "timm")]:
            del sys.modules[name]
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}",
                                 "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import timm
    return timm


def _timm_child(args):
    import numpy as np
    import torch

    timm = _import_timm()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1, 1, (args.batch_size, 3, args.image_size,
                                             args.image_size)).astype("float32"))
    y = torch.from_numpy(np.arange(args.batch_size) % 1000)
    out = {"backend": f"timm ({'torch.compile' if args.compiled else 'eager'})"}
    for key, name in ((args.model, args.timm), ("resnet50", "resnet50")):
        model = timm.create_model(name, pretrained=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        forward = torch.compile(model) if args.compiled else model

        def predict():
            model.eval()
            with torch.no_grad():
                forward(x)

        def train():
            model.train()
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(forward(x), y).backward()
            optimizer.step()

        out[key] = {"predict_img_s": args.batch_size / _time(predict, args.repeats),
                    "train_img_s": args.batch_size / _time(train, args.repeats)}
    print("RESULT" + json.dumps(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sknet50")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--output", default=None, help="Also write the results as JSON here.")
    parser.add_argument("--timm", default=None,
                        help="timm's name of the same architecture: also time it (PyTorch).")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _timm_child(args) if os.environ.get("KERAS_BACKEND") == "timm" else _child(args)
    results, failed = {}, []
    candidates = [b for b in args.backends.split(",") if b]
    if args.timm:
        candidates += ["timm", "timm+compile"]
    for backend in candidates:
        cmd = [sys.executable, __file__, "--child", f"--model={args.model}",
               f"--batch_size={args.batch_size}", f"--image_size={args.image_size}",
               f"--repeats={args.repeats}", f"--timm={args.timm}"]
        if backend == "timm+compile":
            cmd.append("--compiled")
        env = dict(os.environ, KERAS_BACKEND=backend.split("+")[0].split(":")[0])
        if backend.startswith("tensorflow:"):  # tensorflow:eigen / tensorflow:onednn
            env["TF_ENABLE_ONEDNN_OPTS"] = {"eigen": "0", "onednn": "1"}[backend.split(":")[1]]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:  # say why, and keep the other backends' figures
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"backend {backend} failed: {last}", file=sys.stderr)
            failed.append(backend)
            continue
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
        results[backend] = json.loads(line[len("RESULT"):])
    if not results:
        sys.exit("every backend failed")
    base = next((results[b] for b in results if b.startswith("tensorflow")), None)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    print(f"{args.model}, batch {args.batch_size}, {args.image_size}², float32"
          + (f", ONEDNN_MAX_CPU_ISA={isa}" if isa else ""))
    compiled = results.get("timm+compile")
    print(f"{'backend':18s} {'mode':8s} {'img/s':>8s} {'vs ResNet50':>12s} {'vs TF':>7s}"
          + (f" {'vs compiled timm':>17s}" if compiled else ""))
    for backend, res in results.items():
        for mode in ("predict", "train"):
            key = f"{mode}_img_s"
            speed = res[args.model][key]
            vs_tf = f"{speed / base[args.model][key]:.2f}" if base else "-"
            print(f"{backend:18s} {mode:8s} {speed:8.2f} "
                  f"{speed / res['resnet50'][key]:12.2f} {vs_tf:>7s}"
                  + (f" {speed / compiled[args.model][key]:17.2f}" if compiled else ""))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
