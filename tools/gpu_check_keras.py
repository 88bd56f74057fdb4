"""The package on a GPU without TensorFlow: Keras' JAX and PyTorch backends (tools/gpu_check.sh).

Each part runs in its own process (a Keras backend is fixed at import) and writes one JSON
file, rewritten after each item, so that a part its time box kills keeps what it measured:

  KERAS_BACKEND=jax|torch python tools/gpu_check_keras.py families OUT.json [--shard=I/N]
      every family's mini configuration (those of tests/test_kernel_paths.py): inference and
      training forward and the gradients on the GPU against the same weights on the CPU
      (float32, TF32 off), then `fit` steps on the GPU under mixed_float16 and mixed_bfloat16
      (finite losses, every weight moved, float32 master weights, convs in the mixed type)
  python tools/gpu_check_keras.py timm_reference DIR          (PyTorch and timm, no Keras)
      timm's skresnext50_32x4d, resnext50_32x4d and seresnext50_32x4d with random weights
      and BatchNorm statistics: DIR/<model>.safetensors and their logits on the GPU
  KERAS_BACKEND=jax|torch python tools/gpu_check_keras.py convert DIR OUT.json
      those files through the package's timm converter, logits against timm's; and, needing
      no timm, mini networks through keras_to_timm (a timm-layout state_dict) and back
  KERAS_BACKEND=jax|torch python tools/gpu_check_keras.py bench OUT.json
      SKNet-50, ResNeXt-50, SE-ResNeXt-50 at batch 64, 224², mixed bfloat16 then float16:
      inference and an SGD training step on JAX (XLA) and on PyTorch (eager, and Keras'
      jit_compile=True: torch.compile), beside timm's models of the same architectures under
      torch.compile with AMP and channels_last, each repeat alternating Keras and timm
  python tools/gpu_check_keras.py machine WORK WHEELS SITE INSTALL_RC
      WORK/machine.json (GPU, Python, versions) and WORK/wheels.json (the carried wheels)
  python tools/gpu_check_keras.py summary WORK OUT.json
      the one summary of what tools/gpu_check.sh left in WORK, printed and written; exit
      status 1 when anything failed

`--deadline=S`: a part starts no new item S seconds after its start (the rest is recorded as
not run). `--dry_run`: on the CPU, at batch 2 and 32² / 64², one or two steps, one network
per code path of this script (the families' mini networks stand in for the 50-layer ones;
Keras' torch.compile traces with the "eager" backend, no C++ compile; timm is skipped when
it does not import): what `tools/gpu_check.sh --dry-run` runs. Every child ends by recording
where keras and the package came from and that TensorFlow was never imported (it fails if it
was; `SKNET_GPU_CHECK_HIDE_TENSORFLOW=1` makes importing it fail, as on the GPU machines).
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys
import time
import traceback

START = time.monotonic()
MODELS = {"sknet50": "skresnext50_32x4d", "resnext50": "resnext50_32x4d",
          "seresnext50": "seresnext50_32x4d"}  # registry name: timm's name
MINI_OF = {"sknet50": "sk_resnext", "resnext50": "resnext", "seresnext50": "se_resnext"}
POLICIES = ("mixed_bfloat16", "mixed_float16")
HIDE_TENSORFLOW = bool(os.environ.get("SKNET_GPU_CHECK_HIDE_TENSORFLOW"))
ROUND_TRIPS = ("sk_resnext", "sk_resnet", "resnext", "se_resnext")  # timm's unit layouts
# The dry run (2 shared CPU cores, within a test's 10 minutes): one network per code path of
# this script. Every family on JAX and PyTorch is tests/test_backends.py's (on the CPU).
DRY_FAMILIES, DRY_ROUND_TRIPS = ("sk_resnext",), ("sk_resnext", "se_resnext")
# Float32, TF32 off: GPU and CPU differ by rounding only. Forward: max |difference| over
# max |value|; gradients: relative L2 over every variable (BN's backward at batch 8 amplifies
# rounding: tests/test_kernel_paths.py's _assert_steps_equal). A wrong formulation is O(1) off.
FORWARD_RTOL, GRAD_RTOL, CONVERT_RTOL = 1e-3, 1e-2, 1e-3
# mixed_float16's loss scale starts here (Keras' default, 2**15, overflows the first steps
# of these small-batch networks, which are then skipped: no weight would move in a few steps).
INITIAL_LOSS_SCALE = 2.0 ** 8


# --- the child's frame: time box, results file, no TensorFlow --------------------------------

def _time_left(args):
    return args.deadline - (time.monotonic() - START) if args.deadline else float("inf")


def _error(e):
    return {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000],
            "traceback": traceback.format_exc().strip().splitlines()[-6:]}


def _overall(items):
    """"failed" if an item failed, else "ok" (items skipped or not run say so themselves)."""
    return "failed" if any(i.get("status") == "failed" for i in items) else "ok"


def _write(result, path):
    result["elapsed_s"] = round(time.monotonic() - START, 1)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def _part(fn):
    """A child's part: what fails is recorded in its file, which always ends saying where
    keras and the package were imported from and that TensorFlow was not."""
    def run(args):
        result = {}
        try:
            fn(args, result)
        except Exception as e:
            result.update(_error(e))
        result.setdefault("status", "ok")
        import keras

        import sknet_keras

        result["imported_from"] = {"keras": os.path.dirname(keras.__file__),
                                   "sknet_keras": os.path.dirname(sknet_keras.__file__)}
        if HIDE_TENSORFLOW and sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]  # the placeholder that hid it
        result["tensorflow_imported"] = "tensorflow" in sys.modules
        _write(result, args.out)
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
    return run


def _frame(args):
    """{backend, device}, and the accelerator's and the CPU's names for `keras.device`."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        name = gpus[0].device_kind if gpus else None
    else:
        import torch

        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if name is None and not args.dry_run:
        raise RuntimeError(f"no GPU visible to {backend} (--dry_run runs on the CPU)")
    frame = {"backend": backend, "device": name or "cpu (dry run)", "dry_run": args.dry_run}
    # JAX wants an index. PyTorch must have none on the CPU: Keras 3.15 places a variable made
    # under keras.device("cpu:0") with Parameter.to("cpu:0"), a copy that is no leaf (fit then
    # says "No gradients provided for any variable"); "cuda:0" is where CUDA tensors already are.
    cpu = "cpu:0" if backend == "jax" else "cpu"
    return frame, ("gpu:0" if name else cpu), cpu


def _float32_exact():
    """TF32 off: float32 matmuls and convolutions on the GPU round as float32."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    else:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def _where(tensor):
    """The platform a backend tensor lives on ("gpu" / "cuda" / "cpu")."""
    if hasattr(tensor, "devices"):
        return next(iter(tensor.devices())).platform
    return tensor.device.type


def _rel(got, want):
    import numpy as np

    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def _data(batch, size, classes, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"),
            (np.arange(batch) % classes).astype("int32"))


# --- the families: the tests' mini configurations ---------------------------------------------

def family_configs():
    """tests/test_kernel_paths.py's FAMILIES and tests/test_se_bn_inception.py's MINI (the
    test modules import TensorFlow; tests/test_gpu_check.py holds these equal to theirs)."""
    import dataclasses

    from sknet_keras.registry import MODELS as R

    sk = R["sknet50"].replace(name="mini_skresnext", depths=(2, 2, 1, 1), widths=(8, 16, 32, 64),
                              out_channels=(64, 128, 256, 512), groups=8)

    def shufflenet(name):
        return R[name].replace(name=f"mini_{name}", widths=(16, 32), repeats=(2, 1),
                               stem_width=8, head_width=64)

    inception = R["se_bn_inception"]
    return {
        "sk_resnext": sk,
        "sk_resnet": R["skresnet18"].replace(name="mini_skresnet", depths=(1, 1, 1, 1),
                                             widths=(16, 32, 64, 128),
                                             out_channels=(16, 32, 64, 128)),
        "resnext": sk.replace(name="mini_resnext", attention=None),
        "se_resnext": sk.replace(name="mini_seresnext", attention="se"),
        "se_resnet": R["seresnet50"].replace(name="mini_seresnet", depths=(1, 1, 1, 1),
                                             widths=(8, 16, 32, 64),
                                             out_channels=(32, 64, 128, 256)),
        "senet154": R["senet154"].replace(name="mini_senet154", depths=(1, 1, 1, 1),
                                          reduce_widths=(8, 16, 32, 64), widths=(16, 32, 64, 128),
                                          out_channels=(32, 64, 128, 256), groups=4, dropout=0.0),
        "shufflenet_v2": shufflenet("shufflenet_v2_x0_5"),
        "shufflenet_v2_sk": shufflenet("shufflenet_v2_x0_5_sk"),
        "resnest": R["resnest50d"].replace(name="mini_resnest", depths=(1, 1, 1, 1),
                                           planes=(8, 16, 32, 64), stem_width=8, cardinality=2),
        "se_bn_inception": inception.replace(
            name="mini_se_bn_inception", stem_widths=(8, 8, 24), se_reduction=4,
            modules=tuple(dataclasses.replace(m, **{f: -(-getattr(m, f) // 8) for f in (
                "conv1x1", "reduce3x3", "conv3x3", "reduce_double", "conv_double", "pool_proj")})
                for m in inception.modules)),
    }


def randomize_batch_norms(model, seed=0):
    """Random BN statistics, scales and offsets: inference BN is not the identity."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for w in model.weights:
        draw = ((0.5, 1.5) if w.path.endswith(("moving_variance", "gamma")) else
                (-0.2, 0.2) if w.path.endswith(("moving_mean", "beta")) else None)
        if draw:
            w.assign(rng.uniform(*draw, w.shape).astype("float32"))


def inference(model):
    """`run(m, x)`: the inference logits (numpy) of `m`, a model of `model`'s structure (on
    JAX one compile, shared by such models), on the current device."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        fn = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
        return lambda m, x: keras.ops.convert_to_numpy(fn(
            [v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables],
            keras.ops.convert_to_tensor(x)))
    import torch

    def run(m, x):
        with torch.no_grad():
            return keras.ops.convert_to_numpy(m(keras.ops.convert_to_tensor(x), training=False))
    return run


def forward_and_gradients(model, x, y):
    """Inference and training logits, loss and gradients (numpy), on the current device."""
    import keras

    def loss_of(logits):
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
            keras.ops.convert_to_tensor(y), logits, from_logits=True))

    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]
    xt = keras.ops.convert_to_tensor(x)
    if keras.backend.backend() == "jax":
        import jax

        def step(trainable, fixed, x):
            logits, _ = model.stateless_call(trainable, fixed, x, training=True)
            infer, _ = model.stateless_call(trainable, fixed, x, training=False)
            return loss_of(logits), (logits, infer)

        (loss, (logits, infer)), grads = jax.jit(jax.value_and_grad(step, has_aux=True))(
            trainable, fixed, xt)
    else:
        import torch

        with torch.no_grad():
            infer = model(xt, training=False)
        logits = model(xt, training=True)
        loss = loss_of(logits)
        grads = torch.autograd.grad(loss, trainable)
    np_ = keras.ops.convert_to_numpy
    return {"where": _where(logits), "infer": np_(infer), "logits": np_(logits),
            "loss": float(np_(loss)), "grads": [np_(g) for g in grads]}


def compare_devices(config, gpu, cpu, batch, size, classes=5):
    """Forward and gradients of one set of weights on `gpu` and on `cpu` (the dry run, where
    both are the CPU, computes once)."""
    import keras
    import numpy as np

    from sknet_keras.applications import build_model

    x, y = _data(batch, size, classes)
    runs, weights = {}, None
    for device in dict.fromkeys((gpu, cpu)):
        with keras.device(device):
            keras.utils.set_random_seed(0)
            model = build_model(config, input_shape=(size, size, 3), classes=classes,
                                classifier_activation=None)
            if weights is None:
                randomize_batch_norms(model)
                weights = model.get_weights()
            model.set_weights(weights)
            runs[device] = forward_and_gradients(model, x, y)
    a, b = runs[gpu], runs[cpu]
    flat = [np.concatenate([g.ravel() for g in r["grads"]]).astype(np.float64) for r in (a, b)]
    out = {
        "ran_on": [a["where"], b["where"]],
        "inference_logits_rel": _rel(a["infer"], b["infer"]),
        "training_logits_rel": _rel(a["logits"], b["logits"]),
        "loss_rel": abs(a["loss"] - b["loss"]) / abs(b["loss"]),
        "gradients_rel_l2": float(np.linalg.norm(flat[0] - flat[1]) / np.linalg.norm(flat[1])),
        "gradients_worst_variable_rel": max(_rel(g, h) for g, h in zip(a["grads"], b["grads"])),
        "variables": len(a["grads"]),
    }
    on_gpu = gpu == cpu or a["where"] in ("gpu", "cuda")
    good = (max(out["inference_logits_rel"], out["training_logits_rel"], out["loss_rel"])
            < FORWARD_RTOL and out["gradients_rel_l2"] < GRAD_RTOL and on_gpu)
    out["status"] = "ok" if good else "failed"
    return out


def mixed_fit(config, policy, device, batch, size, steps, classes=5):
    """`fit` for `steps` steps (jit_compile "auto": XLA on JAX, eager on PyTorch) under a mixed
    policy: finite losses, every weight moved, float32 master weights, convs in the policy's
    compute type."""
    import keras
    import numpy as np

    from sknet_keras.applications import build_model

    x, y = _data(batch, size, classes)
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        with keras.device(device):
            keras.utils.set_random_seed(0)
            model = build_model(config, input_shape=(size, size, 3), classes=classes)
            optimizer = keras.optimizers.SGD(0.05)
            if policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(
                    optimizer, initial_scale=INITIAL_LOSS_SCALE)
            model.compile(optimizer, "sparse_categorical_crossentropy")
            before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
            history = model.fit(x, y, batch_size=batch, epochs=steps, shuffle=False, verbose=0)
            after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    losses = [float(v) for v in history.history["loss"]]
    moved = sum(not np.array_equal(a, b) for a, b in zip(before, after))
    convs = [layer for layer in model._flatten_layers() if "conv" in type(layer).__name__.lower()]
    out = {
        "losses": losses,
        "variables_moved": f"{moved}/{len(before)}",
        "master_weights": sorted({str(w.dtype) for w in model.weights}),
        "conv_compute_dtypes": sorted({layer.compute_dtype for layer in convs}),
        "optimizer": type(model.optimizer).__name__,
        "weights_on": _where(model.trainable_weights[0].value),
    }
    if hasattr(model.optimizer, "dynamic_scale"):
        out["loss_scale"] = float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))
    good = (all(np.isfinite(losses)) and moved == len(before)
            and out["master_weights"] == ["float32"]
            and out["conv_compute_dtypes"] == [policy.split("_", 1)[1]])
    out["status"] = "ok" if good else "failed"
    return out


@_part
def families(args, result):
    import keras

    frame, gpu, cpu = _frame(args)
    _float32_exact()
    batch, size, steps = (2, 64, 2) if args.dry_run else (8, 64, 3)
    index, count = map(int, args.shard.split("/"))
    names = [n for n in family_configs() if not args.dry_run or n in DRY_FAMILIES]
    result.update(frame, batch=batch, image_size=size, fit_steps=steps, families={},
                  tolerances={"forward_rel": FORWARD_RTOL, "gradients_rel_l2": GRAD_RTOL})
    for name in names[index::count]:
        config = family_configs()[name]
        if _time_left(args) < 15:
            result["families"][name] = {"status": "not run", "reason": "time box"}
            continue
        entry = result["families"][name] = {}
        checks = [("float32_gpu_vs_cpu", lambda: compare_devices(config, gpu, cpu, batch, size))]
        checks += [(p, lambda p=p: mixed_fit(config, p, gpu, batch, size, steps)) for p in POLICIES]
        for check, run in checks:
            try:
                entry[check] = run()
            except Exception as e:
                entry[check] = _error(e)
            keras.backend.clear_session()
        entry["status"] = _overall(entry.values())
        _write(result, args.out)
    result["status"] = _overall(result["families"].values())


# --- the converters ---------------------------------------------------------------------------

def _import_timm():
    try:
        import timm
    except Exception as e:
        return None, f"import timm failed: {type(e).__name__}: {e}"
    return timm, None


def timm_reference(args):
    """timm's models, random weights and BN statistics: state_dicts and logits (no Keras)."""
    import numpy as np

    out = os.path.join(args.dir, "timm_reference.json")
    os.makedirs(args.dir, exist_ok=True)
    timm, why = _import_timm()
    if timm is None:
        _write({"status": "skipped", "reason": why}, out)
        return
    import torch
    from safetensors.torch import save_file

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    batch, size = (2, 64) if args.dry_run else (4, 224)
    result = {"device": device, "timm": timm.__version__, "torch": torch.__version__, "models": {}}
    for keras_name, timm_name in MODELS.items():
        try:
            torch.manual_seed(0)
            model = timm.create_model(timm_name, pretrained=False)
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.2)
                        m.running_mean.normal_(0, 0.2), m.running_var.uniform_(0.5, 1.5)
                x = torch.randn(batch, 3, size, size)
                logits = model.eval().to(device)(x.to(device)).float().cpu()
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, os.path.join(args.dir, f"{keras_name}.safetensors"))
            np.savez(os.path.join(args.dir, f"{keras_name}.golden.npz"), input_nchw=x.numpy(),
                     logits=logits.numpy())
            # Logits that differ per image (not one vector for all): a mapping error shows.
            result["models"][keras_name] = {
                "timm": timm_name, "status": "ok", "logits_max_abs": float(logits.abs().max()),
                "logits_std_across_images": float(logits.std(0).mean())}
        except Exception as e:
            result["models"][keras_name] = _error(e)
        _write(result, out)
    result["status"] = _overall(result["models"].values())
    _write(result, out)


@_part
def convert(args, result):
    import keras
    import numpy as np
    from safetensors.numpy import save_file

    from sknet_keras.applications import build_model
    from sknet_keras.convert import convert_file
    from sknet_keras.convert.timm import keras_to_timm
    from sknet_keras.weights.files import assign_checked

    frame, gpu, _ = _frame(args)
    _float32_exact()
    result.update(frame, tolerance_rel=CONVERT_RTOL, timm={}, keras_to_timm_and_back={})
    reference = os.path.join(args.dir, "timm_reference.json")
    ref = json.load(open(reference)) if os.path.exists(reference) else {
        "status": "skipped", "reason": "no timm reference was made"}
    if ref["status"] == "skipped":
        result["timm"] = {"status": "skipped", "reason": ref["reason"]}
    for name in MODELS if ref["status"] != "skipped" else ():
        try:
            golden = np.load(os.path.join(args.dir, f"{name}.golden.npz"))
            x = np.transpose(golden["input_nchw"], (0, 2, 3, 1))
            source = os.path.join(args.dir, f"{name}.safetensors")
            with keras.device(gpu):
                model = build_model(name, input_shape=x.shape[1:], weights=None,
                                    classifier_activation=None)
                assign_checked(model, convert_file("timm", name, source), source)
                rel = _rel(inference(model)(model, x), golden["logits"])
            result["timm"][name] = {"logits_rel": rel,
                                    "status": "ok" if rel < CONVERT_RTOL else "failed"}
        except Exception as e:
            result["timm"][name] = _error(e)
        keras.backend.clear_session()
        _write(result, args.out)
    # Keras → a timm state_dict (.safetensors, as timm's releases) → Keras: the same weights.
    configs = family_configs()
    x, _ = _data(2, 32 if args.dry_run else 64, 10)
    for family in DRY_ROUND_TRIPS if args.dry_run else ROUND_TRIPS:
        try:
            config = configs[family]
            path = os.path.join(args.dir, f"{family}.{frame['backend']}.safetensors")
            with keras.device(gpu):
                keras.utils.set_random_seed(0)
                made, back = (build_model(config, input_shape=x.shape[1:], classes=10,
                                          classifier_activation=None) for _ in range(2))
                randomize_batch_norms(made)
                save_file(keras_to_timm(made, config), path)
                assign_checked(back, convert_file("timm", config, path), path)
                run = inference(made)
                rel = _rel(run(back, x), run(made, x))
            same = all(np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
                       for a, b in zip(made.weights, back.weights))
            result["keras_to_timm_and_back"][family] = {
                "logits_rel": rel, "weights_equal": same,
                "status": "ok" if same and rel == 0 else "failed"}
        except Exception as e:
            result["keras_to_timm_and_back"][family] = _error(e)
        keras.backend.clear_session()
        _write(result, args.out)
    timm_items = [result["timm"]] if "status" in result["timm"] else result["timm"].values()
    result["status"] = _overall([*timm_items, *result["keras_to_timm_and_back"].values()])


# --- the benchmark ----------------------------------------------------------------------------

def _bench_jobs(backend, dry_run):
    """(model, policy, Keras mode) in the order they run: what the time box cuts is last."""
    first, models = "sknet50", list(MODELS)
    if backend == "jax":
        jobs = [(m, p, "xla") for p in POLICIES for m in models]
    else:
        jobs = ([(m, POLICIES[0], "eager") for m in models] + [(first, POLICIES[0], "compiled")]
                + [(m, POLICIES[1], "eager") for m in models]
                + [(m, POLICIES[0], "compiled") for m in models[1:]]
                + [(m, POLICIES[1], "compiled") for m in models])
    if dry_run:  # each Keras mode once (both policies: the families' `fit`)
        jobs = [j for j in jobs if j[:2] == (first, POLICIES[0])]
    return jobs


def _keras_runner(model, policy, mode, x, y, size):
    import keras

    from sknet_keras.applications import build_model

    keras.mixed_precision.set_dtype_policy(policy)
    try:
        net = build_model(model, input_shape=(size, size, 3), weights=None)
        net.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy",
                    jit_compile=mode != "eager")
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return {"predict": lambda: net.predict_on_batch(x), "train": lambda: net.train_on_batch(x, y)}


class _Timm:
    """timm's models under torch.compile, AMP and channels_last (one compiled module each)."""

    def __init__(self, timm, x, y):
        import torch

        self.timm, self.models = timm, {}
        self.x, self.y = x.contiguous(memory_format=torch.channels_last), y

    def runner(self, timm_name, policy):
        import torch

        if timm_name not in self.models:
            model = self.timm.create_model(timm_name, pretrained=False).cuda()
            model = model.to(memory_format=torch.channels_last)
            self.models[timm_name] = (model, torch.compile(model),
                                      torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
        model, compiled, optimizer = self.models[timm_name]
        dtype = torch.bfloat16 if policy == "mixed_bfloat16" else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        x, y = self.x, self.y

        def predict():
            model.eval()
            with torch.no_grad(), torch.autocast("cuda", dtype):
                return compiled(x).float().cpu()  # to the host, as Keras' predict_on_batch

        def train():
            model.train()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype):
                loss = torch.nn.functional.cross_entropy(compiled(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss.item()

        return {"predict": predict, "train": train}


class _RunnerError(RuntimeError):
    def __init__(self, label, error):
        super().__init__(f"{label}: {type(error).__name__}: {error}")
        self.label = label


def _alternate(runners, batch, repeats):
    """img/s of each runner, inference then training, median over repeats in which every
    runner runs once in turn (what drifts on the GPU drifts alike for all). The first call
    (compiles) is timed apart."""
    out = {label: {} for label in runners}
    for mode in ("predict", "train"):
        for label, run in runners.items():
            start = time.perf_counter()
            try:
                run[mode]()
            except Exception as e:  # say whose: timm's failure leaves Keras' figures
                raise _RunnerError(label, e) from e
            out[label][f"{mode}_first_call_s"] = round(time.perf_counter() - start, 2)
            run[mode]()
        times = {label: [] for label in runners}
        for _ in range(repeats):
            for label, run in runners.items():
                start = time.perf_counter()
                run[mode]()
                times[label].append(time.perf_counter() - start)
        for label in runners:
            out[label][f"{mode}_img_s"] = round(batch / statistics.median(times[label]), 2)
    return out


def _timm_failed(result, e, name, policy):
    """timm failed: recorded once; Keras is timed alone from here on."""
    result["timm"] = {**_error(e), "first_failed_in": f"{name} {policy}"}
    return None


@_part
def bench(args, result):
    import keras

    frame, gpu, _ = _frame(args)
    backend = frame["backend"]
    batch, size, repeats = (2, 32, 2) if args.dry_run else (64, 224, 10)
    result.update(frame, batch=batch, image_size=size, repeats=repeats, jobs=[])
    timm = None
    if backend == "torch":
        import torch

        if args.dry_run:  # Keras' torch.compile traced by Dynamo, run without C++ compiles
            compile_ = torch.compile
            torch.compile = lambda fn=None, **kw: compile_(fn, **{"backend": "eager", **kw})
        torch.backends.cudnn.benchmark = True  # for Keras' convs and timm's alike
        timm, why = _import_timm()
        if timm is not None and gpu.startswith("cpu"):
            timm, why = None, "no GPU (timm runs under CUDA AMP here)"
        result["timm"] = ({"status": "skipped", "reason": why} if timm is None else
                          {"version": timm.__version__, "mode": "torch.compile, AMP, channels_last",
                           "status": "ok"})
    configs = family_configs()
    x, y = _data(batch, size, 1000)
    with keras.device(gpu):
        xd, yd = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)  # on the device
        reference = _Timm(timm, xd.permute(0, 3, 1, 2), yd.long()) if timm else None
        for name, policy, mode in _bench_jobs(backend, args.dry_run):
            job = {"model": name, "policy": policy, "keras_mode": mode}
            result["jobs"].append(job)
            if _time_left(args) < 20:
                job.update(status="not run", reason="time box")
                continue
            if args.dry_run:
                job["stand_in"] = configs[MINI_OF[name]].name
            try:
                model = configs[MINI_OF[name]] if args.dry_run else name
                runners = {"keras": _keras_runner(model, policy, mode, xd, yd, size)}
                if reference:
                    try:
                        runners["timm"] = reference.runner(MODELS[name], policy)
                    except Exception as e:
                        reference = _timm_failed(result, e, name, policy)
                try:
                    job.update(_alternate(runners, batch, repeats), status="ok")
                except _RunnerError as e:
                    if e.label != "timm":
                        raise
                    reference = _timm_failed(result, e, name, policy)
                    del runners["timm"]
                    job.update(_alternate(runners, batch, repeats), status="ok")
            except Exception as e:
                job.update(_error(e))
            runners = None  # this job's Keras model goes before the next is built
            keras.backend.clear_session()
            _write(result, args.out)
    result["status"] = _overall(result["jobs"])


# --- the summary ------------------------------------------------------------------------------

def machine(args):
    """WORK/machine.json (the GPU, Python, versions: no package imported) and WORK/wheels.json
    (the carried wheels, their size against the 64 MiB a device command carries)."""
    import importlib.metadata as metadata
    import platform

    versions = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in ("keras", "jax", "jaxlib", "torch", "timm", "torchvision", "numpy", "h5py",
                    "ml-dtypes", "optree", "namex", "safetensors", "sknet-keras", "tensorflow") \
                or name.startswith(("jax-cuda", "nvidia-cudnn")):
            versions.setdefault(name, dist.version)  # the first on sys.path: what imports
    gpu = os.path.join(args.work, "gpu.txt")
    _write({"gpu": open(gpu).read().strip() if os.path.exists(gpu) else None,
            "python": platform.python_version(), "dry_run": args.dry_run, "versions": versions,
            "sections": os.environ.get("GPU_CHECK_SECTIONS"), "status": "ok"},
           os.path.join(args.work, "machine.json"))
    files = {f: os.path.getsize(os.path.join(args.wheels, f))
             for f in sorted(os.listdir(args.wheels)) if f.endswith(".whl")} \
        if os.path.isdir(args.wheels) else {}
    total = sum(files.values())
    ok = args.install_rc == "0" and total <= 64 * 2 ** 20
    _write({"folder": args.wheels, "files": files, "total_bytes": total,
            "total_mib": round(total / 2 ** 20, 2), "target": args.site,
            "install_rc": args.install_rc,
            "status": "ok" if ok else "skipped" if not files else "failed",
            **({"reason": "no wheels carried: the installed keras and package run"}
               if not files else {})},
           os.path.join(args.work, "wheels.json"))


def _load(path, missing="no result (crashed, or killed by its time box)"):
    if os.path.exists(path):
        try:
            result = json.load(open(path))
        except ValueError as e:
            return {"status": "failed", "reason": f"unreadable result {path}: {e}"}
        # Written after each item, never finished: its time box killed it mid-item.
        result.setdefault("status", "cut")
        result.setdefault("reason", "killed by its time box; the items it finished are kept")
        return result
    log = re.sub(r"\.json$", ".log", path)
    tail = open(log, errors="replace").read().strip().splitlines()[-12:] if os.path.exists(log) else []
    return {"status": "failed", "reason": missing, "log_tail": tail}


def _families(work, backend):
    """The shards' results as one; each shard's status (and why) under "shards"."""
    logs = glob.glob(os.path.join(work, f"families.{backend}.*.log"))  # a crash leaves a log
    parts = [_load(re.sub(r"\.log$", ".json", p)) for p in sorted(logs)] or [
        _load(os.path.join(work, f"families.{backend}.0.json"))]
    merged = {k: v for part in parts for k, v in part.items()
              if k not in ("status", "reason", "error", "traceback", "log_tail")}
    merged["families"] = {k: v for part in parts for k, v in part.get("families", {}).items()}
    merged["shards"] = [{k: v for k, v in part.items() if k in (
        "status", "reason", "error", "traceback", "log_tail", "elapsed_s")} for part in parts]
    merged["tensorflow_imported"] = any(p.get("tensorflow_imported") for p in parts)
    return merged


def _bench_table(bench):
    """One row per job: img/s and the ratio to timm's model of the same architecture and
    policy (timed alternately in the PyTorch child; JAX's rows divide by those figures)."""
    timm = {}
    for job in bench.get("torch", {}).get("jobs", []):
        if "timm" in job:
            timm.setdefault((job["model"], job["policy"]), job["timm"])
    rows = []
    for backend in ("jax", "torch"):
        for job in bench.get(backend, {}).get("jobs", []):
            row = {"model": job["model"], "policy": job["policy"],
                   "keras": f"{backend} {job['keras_mode']}", "status": job["status"]}
            ref = job.get("timm") or timm.get((job["model"], job["policy"]))
            for mode in ("predict", "train") if "keras" in job else ():
                row[f"{mode}_img_s"] = speed = job["keras"][f"{mode}_img_s"]
                if ref:
                    row[f"timm_{mode}_img_s"] = ref[f"{mode}_img_s"]
                    row[f"{mode}_vs_timm"] = round(speed / ref[f"{mode}_img_s"], 3)
            rows.append(row)
    return rows


def _tensorflow_parts(work):
    """The TensorFlow sections of tools/gpu_check.sh, on a machine that has TensorFlow."""
    def text(name):
        path = os.path.join(work, name)
        return open(path, errors="replace").read() if os.path.exists(path) else ""

    def tail(name, n=15):
        return text(name).strip().splitlines()[-n:]

    parts = ["tests on the GPU", "sknet_keras.benchmark (TensorFlow, with and without XLA)",
             "the trainer on 2 logical GPUs, killed and resumed"]
    if text("tf_skipped.txt").strip():
        return {"status": "skipped", "reason": text("tf_skipped.txt").strip(), "parts": parts}
    if not text("tests.rc"):
        return {"status": "not run", "reason": "not among --sections", "parts": parts}
    rc = {n: int(text(f"{n}.rc") or -1) for n in ("tests", "whole", "resume")}
    bench = {}
    for jit in ("false", "true"):
        path = os.path.join(work, f"bench_jit_{jit}.json")
        bench[f"jit_compile={jit}"] = (json.load(open(path)) if os.path.exists(path)
                                       else {"error": tail(f"bench_jit_{jit}.txt")})
        bench[f"jit_compile={jit}"]["table"] = tail(f"bench_jit_{jit}.txt", 8)
    compare = text("compare.txt").strip().splitlines()
    return {
        "status": "failed" if any(rc.values()) else "ok",
        "tests": {"status": rc["tests"], "tail": tail("tests.txt", 6)},
        "benchmark": bench,
        "kill_resume": {
            "uninterrupted_status": rc["whole"], "resumed_status": rc["resume"],
            "resumed_output": tail("killed2.txt", 6),
            "comparison": (json.loads(compare[-1]) if compare and compare[-1].startswith("{")
                           else compare)},
    }


def _statuses(node, path=""):
    """(path, status, reason) of every dict below `node` that has a status."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("status"), str):
            found.append((path, node["status"], node.get("reason") or node.get("error", "")))
        for k, v in node.items():
            found += _statuses(v, f"{path}/{k}" if path else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _statuses(v, f"{path}[{i}]")
    return found


def summary(args):
    work = args.work
    sections = os.environ.get("GPU_CHECK_SECTIONS", "checks,bench,tensorflow").split(",")
    out = {"machine": _load(os.path.join(work, "machine.json")),
           "wheels": _load(os.path.join(work, "wheels.json"))}
    if "checks" in sections:
        out["families"] = {b: _families(work, b) for b in ("jax", "torch")}
        out["converters"] = {"timm_reference": _load(os.path.join(work, "timm",
                                                                  "timm_reference.json")),
                             **{b: _load(os.path.join(work, f"convert.{b}.json"))
                                for b in ("jax", "torch")}}
    if "bench" in sections:
        out["benchmark"] = {b: _load(os.path.join(work, f"bench.{b}.json")) for b in ("jax", "torch")}
        out["benchmark"]["table"] = _bench_table(out["benchmark"])
    out["tensorflow"] = _tensorflow_parts(work)
    out["tensorflow_imported"] = {f"{s}.{b}": part.get("tensorflow_imported")
                                  for s in ("families", "converters", "benchmark")
                                  for b, part in out.get(s, {}).items() if b in ("jax", "torch")}
    statuses = _statuses(out)
    out["skipped"] = [f"{p}: {r}" for p, s, r in statuses if s in ("skipped", "not run", "cut")]
    out["failed"] = [f"{p}: {r}"[:300] for p, s, r in statuses if s == "failed"]
    out["status"] = ("failed" if out["failed"] or any(out["tensorflow_imported"].values())
                     else "ok")
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(json.dumps(out["machine"], default=str))
    for backend, part in out.get("families", {}).items():
        items = part.get("families", {}).items()
        print(f"families on {backend}: " + (", ".join(f"{k} {v['status']}" for k, v in items)
                                            or f"{part.get('status')} {part.get('reason', '')}"))
    for row in out.get("benchmark", {}).get("table", []):
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    print("skipped:", *(out["skipped"] or ["nothing"]), sep="\n  ")
    print("failed:", *(out["failed"] or ["nothing"]), sep="\n  ")
    print("status:", out["status"], "\nwrote", args.out)
    sys.exit(out["status"] != "ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["machine", "families", "timm_reference", "convert",
                                         "bench", "summary"])
    parser.add_argument("paths", nargs="+", help="OUT.json | DIR | DIR OUT.json | WORK OUT.json")
    parser.add_argument("--dry_run", action="store_true",
                        help="on the CPU: tiny shapes, one network per code path")
    parser.add_argument("--deadline", type=float, default=0,
                        help="seconds after which no new item starts (0: none)")
    parser.add_argument("--shard", default="0/1", help="families: the I-th of N slices")
    args = parser.parse_args()
    if HIDE_TENSORFLOW:  # `import tensorflow` fails, importlib.util.find_spec finds none
        sys.modules["tensorflow"] = None
    names = {"machine": ["work", "wheels", "site", "install_rc"], "families": ["out"],
             "timm_reference": ["dir"], "convert": ["dir", "out"],
             "bench": ["out"], "summary": ["work", "out"]}[args.part]
    if len(args.paths) != len(names):
        parser.error(f"{args.part} takes {' '.join(n.upper() for n in names)}")
    vars(args).update(zip(names, args.paths))
    {"machine": machine, "families": families, "timm_reference": timm_reference, "convert": convert,
     "bench": bench, "summary": summary}[args.part](args)


if __name__ == "__main__":
    main()
