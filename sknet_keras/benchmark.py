"""`python -m sknet_keras.benchmark`: speed and memory of registry models, side by side.

Always measures `keras.applications.ResNet50` as the yardstick in the same process and
reports every candidate as a ratio to it. Candidates are measured in alternation (round
robin over repeats), after warm-up, through the paths users call:

- inference, `predict_on_batch` (what `model.predict` runs per batch);
- inference, `model(x, training=False)` inside a `tf.function`;
- training, `train_on_batch` (the `model.fit` train step: forward, backward, SGD update).

Each model's multiply-adds per image are counted from its layers (`sknet_keras.complexity`),
and every speed is also reported per multiply-add relative to ResNet50 ("eff"): 1.00 means
the model's arithmetic runs as fast as ResNet50's, so a speed ratio below 1 with eff near 1
is the model's extra arithmetic, not a slow implementation.

Peak memory of a training step is measured per model in a fresh subprocess, so models do not
share a high-water mark: either the peak resident set above the process's baseline after
importing TensorFlow ("rss": what the machine sees, allocator caching included), or the peak
bytes held by TensorFlow's allocator ("allocator": live tensors only; on a GPU this is the
device memory that limits the batch size, so "auto" picks it there and "rss" on CPU).
Results are printed as a table and written as JSON.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from sknet_keras import cli
from absl import app, flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["sknet50"], "Registry models to measure (ResNet50 is always added); "
                  "NAME:remat builds NAME with its SK layers rematerialized in training.")
flags.DEFINE_integer("batch_size", 16, "Batch size.", lower_bound=1)
flags.DEFINE_integer("image_size", 224, "Input height and width.", lower_bound=32)
flags.DEFINE_enum("dtype_policy", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy.")
flags.DEFINE_bool("jit_compile", False, "Compile whole train/predict steps with XLA.")
flags.DEFINE_list("modes", ["predict", "function", "train"],
                  "What to time: predict (predict_on_batch), function (model(x) in a "
                  "tf.function), train (train_on_batch).")
flags.DEFINE_integer("warmup", 2, "Untimed calls per mode before timing.", lower_bound=0)
flags.DEFINE_integer("repeats", 5, "Rounds over all candidates; the median is reported.",
                     lower_bound=1)
flags.DEFINE_integer("iters", 2, "Calls per candidate per round.", lower_bound=1)
flags.DEFINE_integer("memory_batch_size", 32, "Batch size of the memory probe (0: skip).",
                     lower_bound=0)
flags.DEFINE_integer("memory_repeats", 1, "Memory probes per model (fresh processes); the "
                     "median is reported (one probe varies by a few percent).", lower_bound=1)
flags.DEFINE_enum("memory_measure", "auto", ["auto", "rss", "allocator"],
                  "rss: peak resident set of the probe process; allocator: peak bytes in use "
                  "by TensorFlow's allocator (BFC, also on CPU); auto: allocator on a GPU, "
                  "else rss.")
flags.DEFINE_string("output", "benchmark.json", "Where to write the JSON results.")
flags.DEFINE_string("memory_probe", None, "Internal: run the memory probe for this model.")
flags.DEFINE_string("baseline", None, "Registry model the ratios are taken to (added to the "
                    "run if not in --models); default keras ResNet50.")

YARDSTICK = "keras_resnet50"
VARIANTS = ("remat",)


def split_variant(name):
    """"sknet50:remat" → ("sknet50", "remat"); ValueError naming an unknown variant."""
    base, _, variant = name.partition(":")
    if variant and variant not in VARIANTS:
        raise ValueError(
            f"unknown variant {variant!r} in {name!r} (known: {', '.join(VARIANTS)})")
    return base, variant


def build(name, image_size, dtype_policy):
    import keras

    from sknet_keras.applications import build_model
    from sknet_keras.layers.selective_kernel import set_rematerialize

    keras.mixed_precision.set_dtype_policy(dtype_policy)
    if name == YARDSTICK:
        return keras.applications.ResNet50(weights=None, input_shape=(image_size, image_size, 3))
    base, variant = split_variant(name)
    model = build_model(base, input_shape=(image_size, image_size, 3))
    if variant == "remat":
        set_rematerialize(model)
    return model


def compile_for_training(model, jit_compile):
    import keras

    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=jit_compile)


def _data(batch_size, image_size, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, image_size, image_size, 3), dtype="float32")
    y = rng.integers(0, 1000, batch_size)
    return x, y


def runners(model, x, y, modes, jit_compile):
    import tensorflow as tf

    from sknet_keras.layers.accel import trace_scope

    def call(t):
        with trace_scope.staying_in_tensorflow():  # a function that is never exported
            return model(t, training=False)

    forward = tf.function(call, jit_compile=jit_compile)
    xt = tf.constant(x)
    table = {
        "predict": lambda: model.predict_on_batch(x),
        "function": lambda: forward(xt).numpy(),
        "train": lambda: model.train_on_batch(x, y),
    }
    return {m: table[m] for m in modes}


def measure(names, batch_size, image_size, dtype_policy, jit_compile, modes, warmup, repeats,
            iters, log=print):
    """{model: {"gmacs": G multiply-adds per image, mode: {"images_per_s": median,
    "samples": [...]}}}, candidates alternated."""
    from sknet_keras.complexity import count_macs

    x, y = _data(batch_size, image_size)
    candidates, gmacs = {}, {}
    for name in names:
        model = build(name, image_size, dtype_policy)
        gmacs[name] = count_macs(model) / 1e9
        compile_for_training(model, jit_compile)
        candidates[name] = runners(model, x, y, modes, jit_compile)
        for run in candidates[name].values():
            for _ in range(warmup):
                run()
        log(f"  built and warmed up {name}")
    samples = {n: {m: [] for m in modes} for n in names}
    for r in range(repeats):
        for name in names:
            for mode, run in candidates[name].items():
                start = time.perf_counter()
                for _ in range(iters):
                    run()
                samples[name][mode].append(batch_size * iters / (time.perf_counter() - start))
        log(f"  round {r + 1}/{repeats} done")
    return {n: {"gmacs": gmacs[n],
                **{m: {"images_per_s": statistics.median(s), "samples": s}
                   for m, s in modes_.items()}} for n, modes_ in samples.items()}


def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def resolve_memory_measure(measure):
    """"auto" → "allocator" when TensorFlow sees a GPU (device memory), else "rss"."""
    if measure != "auto":
        return measure
    import tensorflow as tf

    return "allocator" if tf.config.list_logical_devices("GPU") else "rss"


def memory_probe(name, batch_size, image_size, dtype_policy, jit_compile, measure="rss"):
    """Peak memory (MiB) of three training steps in this process (see module doc).

    "rss": peak resident set above the post-import baseline. "allocator": peak bytes in use
    by TensorFlow's allocator on the first GPU, else on the CPU, whose allocator must then be
    BFC (`TF_CPU_ALLOCATOR_USE_BFC=true` before TensorFlow starts: `peak_memory` sets it).
    """
    import tensorflow as tf  # (the rss baseline includes TensorFlow itself)

    baseline = _rss_kb("VmRSS")
    model = build(name, image_size, dtype_policy)
    compile_for_training(model, jit_compile)
    x, y = _data(batch_size, image_size)
    for _ in range(3):
        model.train_on_batch(x, y)
    if measure == "rss":
        return (_rss_kb("VmHWM") - baseline) / 1024
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    return tf.config.experimental.get_memory_info(device)["peak"] / 2**20


def peak_memory(name, measure, repeats=1):
    """Median over `repeats` fresh-process probes."""
    return statistics.median(_probe_once(name, measure) for _ in range(max(1, repeats)))


def _probe_once(name, measure):
    cmd = [sys.executable, "-m", "sknet_keras.benchmark", f"--memory_probe={name}",
           f"--memory_batch_size={FLAGS.memory_batch_size}", f"--image_size={FLAGS.image_size}",
           f"--dtype_policy={FLAGS.dtype_policy}", f"--jit_compile={FLAGS.jit_compile}",
           f"--memory_measure={measure}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if measure == "allocator":
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"  # CPU tensors through BFC, which counts bytes
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        lines = [l for l in out.stderr.strip().splitlines() if l.strip()]
        cli.fail(f"the memory probe of {name} failed (status {out.returncode}): "
                 f"{lines[-1] if lines else 'no error output'}", "sknet_keras.benchmark")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def report(results, memory, modes, baseline=YARDSTICK):
    """The table: per mode img/s, ratio to the baseline and eff (ratio per multiply-add)."""
    base = results[baseline]
    header = f"{'model':<24}{'GMAC':>7}" + "".join(
        f"{m + ' img/s':>16}{'ratio':>7}{'eff':>6}" for m in modes)
    if memory:
        header += f"{'train peak MiB':>16}{'ratio':>7}"
    lines = [header]
    for name, res in results.items():
        row = f"{name:<24}{res['gmacs']:>7.3f}"
        for m in modes:
            ratio = res[m]["images_per_s"] / base[m]["images_per_s"]
            row += (f"{res[m]['images_per_s']:>16.2f}{ratio:>7.2f}"
                    f"{ratio * res['gmacs'] / base['gmacs']:>6.2f}")
        if memory:
            row += f"{memory[name]:>16.0f}{memory[name] / memory[baseline]:>7.2f}"
        lines.append(row)
    lines.append(f"ratio: images/s over {baseline}'s; eff: multiply-adds/s over {baseline}'s")
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.memory_probe:
        peak = memory_probe(FLAGS.memory_probe, FLAGS.memory_batch_size, FLAGS.image_size,
                            FLAGS.dtype_policy, FLAGS.jit_compile,
                            resolve_memory_measure(FLAGS.memory_measure))
        print(json.dumps({"peak_mib": peak}))
        return
    from sknet_keras.registry import get_model_config

    def canonical(name):
        try:
            base, variant = split_variant(name)
        except ValueError as e:
            raise app.UsageError(f"--models: {e}") from None
        return get_model_config(base).name + (":" + variant if variant else "")

    names = [YARDSTICK] + [canonical(n) for n in FLAGS.models]
    baseline = canonical(FLAGS.baseline) if FLAGS.baseline else YARDSTICK
    if baseline not in names:
        names.append(baseline)
    unknown = set(FLAGS.modes) - {"predict", "function", "train"}
    if unknown:
        raise app.UsageError(f"--modes: unknown mode(s) {sorted(unknown)}")
    import tensorflow as tf

    from sknet_keras.layers.accel import kernel_support

    kernels = kernel_support.describe()
    print(f"batch {FLAGS.batch_size}, {FLAGS.image_size}x{FLAGS.image_size}, "
          f"{FLAGS.dtype_policy}, jit_compile={FLAGS.jit_compile}, "
          f"{os.cpu_count()} CPUs, {kernels}, "
          f"devices: {[d.name for d in tf.config.list_logical_devices()]}")
    results = measure(names, FLAGS.batch_size, FLAGS.image_size, FLAGS.dtype_policy,
                      FLAGS.jit_compile, FLAGS.modes, FLAGS.warmup, FLAGS.repeats, FLAGS.iters)
    memory_measure = resolve_memory_measure(FLAGS.memory_measure)
    memory = ({n: peak_memory(n, memory_measure, FLAGS.memory_repeats) for n in names}
              if FLAGS.memory_batch_size else {})
    print(report(results, memory, FLAGS.modes, baseline))
    if memory:
        print(f"train peak memory: batch {FLAGS.memory_batch_size}, measured as {memory_measure}")
    payload = {
        "settings": {k: getattr(FLAGS, k) for k in ("batch_size", "image_size", "dtype_policy",
                                                   "jit_compile", "modes", "repeats", "iters",
                                                   "memory_batch_size", "memory_repeats")},
        "memory_measure": memory_measure,
        "baseline": baseline,
        "results": results,
        "train_peak_mib": memory,
        "tensorflow": tf.__version__,
        "kernels": kernels,
    }
    from sknet_keras.atomic_files import atomic_open

    with atomic_open(FLAGS.output) as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    cli.run(main, "sknet_keras.benchmark")
