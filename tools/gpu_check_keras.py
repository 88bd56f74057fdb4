"""The package on a GPU without TensorFlow: Keras' JAX and PyTorch backends (tools/gpu_check.sh).

Each part runs in its own process (a Keras backend is fixed at import) and writes one JSON
file, rewritten after each item, so that a part killed by its time box keeps what it measured:

  KERAS_BACKEND=jax|torch python tools/gpu_check_keras.py families OUT.json
      every family's mini configuration (those of tests/test_kernel_paths.py): forward
      (inference and training) and gradients on the GPU against the same computation on the
      CPU, float32 with TF32 off; then `fit` steps on the GPU under mixed_float16 and
      mixed_bfloat16 (finite losses, weights moved, float32 master weights)
  python tools/gpu_check_keras.py timm_reference DIR          (PyTorch and timm, no Keras)
      timm's skresnext50_32x4d, resnext50_32x4d and seresnext50_32x4d with random weights
      and BatchNorm statistics: their state_dicts (DIR/*.safetensors) and logits on the GPU
  KERAS_BACKEND=jax|torch python tools/gpu_check_keras.py convert DIR OUT.json
      those files through the package's timm converter, logits against timm's; and, needing
      no timm, mini networks through keras_to_timm and back (a timm-layout state_dict)
  KERAS_BACKEND=jax|torch python tools/gpu_check_keras.py bench OUT.json
      SKNet-50, ResNeXt-50, SE-ResNeXt-50 at batch 64, 224², mixed bfloat16 then float16:
      inference and a training step (SGD) on JAX (XLA) and on PyTorch (eager, and Keras'
      jit_compile=True, i.e. torch.compile), beside timm's models of the same architectures
      under torch.compile with AMP and channels_last, each repeat alternating Keras and timm
  python tools/gpu_check_keras.py summary WORK OUT.json
      the one summary of the files tools/gpu_check.sh left in WORK

`--dry_run`: on the CPU, mini configurations at batch 2 and 32², one or two steps (what
`tools/gpu_check.sh --dry-run` runs; the "GPU" is then the CPU too). `--deadline`: seconds
after which a part starts no new item (the rest is recorded as not run). Every child ends by
recording that TensorFlow was never imported (and fails if it was).
"""

import argparse
import importlib.abc
import json
import os
import statistics
import sys
import time
import traceback

START = time.monotonic()
MODELS = {"sknet50": "skresnext50_32x4d", "resnext50": "resnext50_32x4d",
          "seresnext50": "seresnext50_32x4d"}  # registry name: timm's name
POLICIES = ("mixed_bfloat16", "mixed_float16")
# Float32, TF32 off: GPU against CPU differs by rounding only. Forward: max |difference| over
# max |value|; gradients: relative L2 over every variable (BN's backward at a batch of 8
# amplifies rounding: tests/test_kernel_paths.py's _assert_steps_equal). A wrong formulation
# differs by O(1).
FORWARD_RTOL, GRAD_RTOL, CONVERT_RTOL = 1e-3, 1e-2, 1e-3


# --- the child's frame: time box, results file, no TensorFlow --------------------------------

class _NoTensorFlow(importlib.abc.MetaPathFinder):
    """`SKNET_GPU_CHECK_HIDE_TENSORFLOW=1` (the dry run): this machine is made like the GPU
    machines, where importing TensorFlow fails. Attempts are recorded."""
    attempts = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            self.attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by gpu_check)", name=name)
        return None


def _overall(items):
    """"failed" if any item failed, else "ok" (items skipped or cut by the time box say so)."""
    return "failed" if any(i.get("status") == "failed" for i in items) else "ok"


def _time_left(args):
    return args.deadline - (time.monotonic() - START) if args.deadline else float("inf")


def _error(e):
    return {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000],
            "traceback": traceback.format_exc().strip().splitlines()[-6:]}


def _write(result, path):
    result["elapsed_s"] = round(time.monotonic() - START, 1)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def _finish(result, path):
    import keras

    import sknet_keras

    result["imported_from"] = {"keras": os.path.dirname(keras.__file__),
                               "sknet_keras": os.path.dirname(sknet_keras.__file__)}
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    result["tensorflow_import_attempts"] = sorted(set(_NoTensorFlow.attempts))
    _write(result, path)
    assert "tensorflow" not in sys.modules, "tensorflow was imported"


def _part(fn):
    """A child's part: whatever fails is recorded in its file, which always ends with
    `_finish` (where keras and the package came from; TensorFlow never imported)."""
    def run(args):
        result = {}
        try:
            fn(args, result)
        except Exception as e:
            result.update(_error(e))
        result.setdefault("status", "ok")
        _finish(result, args.out)
    return run


def _frame(args):
    """{backend, device} and the accelerator / CPU device names for `keras.device`."""
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
    return frame, ("gpu:0" if name else "cpu:0"), "cpu:0"


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


# --- the families: the mini configurations of the tests ---------------------------------------

def family_configs():
    """tests/test_kernel_paths.py's FAMILIES and tests/test_se_bn_inception.py's MINI (the
    tests import TensorFlow; tests/test_gpu_check.py holds these equal to theirs)."""
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
        "se_bn_inception": inception.replace(
            name="mini_se_bn_inception", stem_widths=(8, 8, 24), se_reduction=4,
            modules=tuple(dataclasses.replace(m, **{f: -(-getattr(m, f) // 8) for f in (
                "conv1x1", "reduce3x3", "conv3x3", "reduce_double", "conv_double", "pool_proj")})
                for m in inception.modules)),
    }


def randomize_batch_norms(model, seed=0):
    """Random BN statistics and scales, so that inference BN is not the identity."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for w in model.weights:
        draw = ((0.5, 1.5) if w.path.endswith(("moving_variance", "gamma")) else
                (-0.2, 0.2) if w.path.endswith(("moving_mean", "beta")) else None)
        if draw:
            w.assign(rng.uniform(*draw, w.shape).astype("float32"))


def _data(batch, size, classes, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"),
            (np.arange(batch) % classes).astype("int32"))


def forward_and_gradients(model, x, y):
    """Inference logits, training logits, loss and gradients (numpy), on the current device."""
    import keras

    def loss_of(logits):
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
            keras.ops.convert_to_tensor(y), logits, from_logits=True))

    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]
    if keras.backend.backend() == "jax":
        import jax

        def train(trainable, fixed, x):
            logits, _ = model.stateless_call(trainable, fixed, x, training=True)
            return loss_of(logits), logits

        infer = jax.jit(lambda t, f, x: model.stateless_call(t, f, x, training=False)[0])(
            trainable, fixed, keras.ops.convert_to_tensor(x))
        (loss, logits), grads = jax.jit(jax.value_and_grad(train, has_aux=True))(
            trainable, fixed, keras.ops.convert_to_tensor(x))
    else:
        import torch

        xt = keras.ops.convert_to_tensor(x)
        with torch.no_grad():
            infer = model(xt, training=False)
        logits = model(xt, training=True)
        loss = loss_of(logits)
        grads = torch.autograd.grad(loss, trainable)
    np_ = keras.ops.convert_to_numpy
    return {"where": _where(logits), "infer": np_(infer), "logits": np_(logits),
            "loss": float(np_(loss)), "grads": [np_(g) for g in grads]}


def compare_devices(config, gpu, cpu, batch, size, classes=5):
    """Forward and gradients of one set of weights on `gpu` and on `cpu`."""
    import keras
    import numpy as np

    from sknet_keras.applications import build_model

    x, y = _data(batch, size, classes)
    runs, weights = {}, None
    for device in (gpu, cpu):
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
    on_gpu = gpu == "cpu:0" or a["where"] in ("gpu", "cuda")
    good = (max(out["inference_logits_rel"], out["training_logits_rel"], out["loss_rel"])
            < FORWARD_RTOL and out["gradients_rel_l2"] < GRAD_RTOL and on_gpu)
    out["status"] = "ok" if good else "failed"
    return out


def mixed_fit(config, policy, device, batch, size, steps, classes=5):
    """`fit` for `steps` steps under a mixed policy: finite losses, weights moved, float32
    master weights, compute in the policy's type."""
    import keras
    import numpy as np

    from sknet_keras.applications import build_model

    x, y = _data(batch, size, classes)
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        with keras.device(device):
            keras.utils.set_random_seed(0)
            model = build_model(config, input_shape=(size, size, 3), classes=classes)
            model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
            before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
            history = model.fit(x, y, batch_size=batch, epochs=steps, shuffle=False, verbose=0)
            after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
            predicted = model.predict_on_batch(x)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    losses = [float(v) for v in history.history["loss"]]
    moved = sum(not np.array_equal(a, b) for a, b in zip(before, after))
    convs = [l for l in model._flatten_layers() if "conv" in type(l).__name__.lower()]
    out = {
        "losses": losses,
        "variables_moved": f"{moved}/{len(before)}",
        "master_weights": sorted({str(w.dtype) for w in model.weights}),
        "conv_compute_dtypes": sorted({l.compute_dtype for l in convs}),
        "optimizer": type(model.optimizer).__name__,
        "weights_on": _where(model.trainable_weights[0].value),
        "predictions_finite": bool(np.isfinite(np.asarray(predicted, np.float32)).all()),
    }
    if hasattr(model.optimizer, "dynamic_scale"):
        out["loss_scale"] = float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))
    compute = policy.split("_", 1)[1]
    good = (all(np.isfinite(losses)) and moved == len(before) and out["predictions_finite"]
            and out["master_weights"] == ["float32"] and out["conv_compute_dtypes"] == [compute])
    out["status"] = "ok" if good else "failed"
    return out


@_part
def families(args, result):
    import keras

    frame, gpu, cpu = _frame(args)
    _float32_exact()
    batch, size, steps = (2, 32, 2) if args.dry_run else (8, 64, 3)
    result.update(frame, batch=batch, image_size=size, fit_steps=steps, families={},
                  tolerances={"forward_rel": FORWARD_RTOL, "gradients_rel_l2": GRAD_RTOL})
    for name, config in family_configs().items():
        if _time_left(args) < 5:
            result["families"][name] = {"status": "not run", "reason": "time box"}
            continue
        entry = result["families"][name] = {}
        for check, run in [("float32_gpu_vs_cpu",
                            lambda: compare_devices(config, gpu, cpu, batch, size))] + [
                (p, lambda p=p: mixed_fit(config, p, gpu, batch, size, steps)) for p in POLICIES]:
            try:
                entry[check] = run()
            except Exception as e:
                entry[check] = _error(e)
            keras.backend.clear_session()
        entry["status"] = "ok" if all(v["status"] == "ok" for v in entry.values()) else "failed"
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

    result = {"models": {}}
    os.makedirs(args.dir, exist_ok=True)
    out = os.path.join(args.dir, "timm_reference.json")
    timm, why = _import_timm()
    if timm is None:
        _write({"status": "skipped", "reason": why}, out)
        return
    import torch
    from safetensors.torch import save_file

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    batch, size = (2, 64) if args.dry_run else (4, 224)
    result.update(device=device, timm=timm.__version__, torch=torch.__version__)
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
            # Per-image logits differ (not one constant vector): a mapping error shows.
            result["models"][keras_name] = {"timm": timm_name, "status": "ok",
                                            "logits_std_across_images":
                                                float(logits.std(0).mean())}
        except Exception as e:
            result["models"][keras_name] = _error(e)
    result["status"] = ("ok" if all(m["status"] == "ok" for m in result["models"].values())
                        else "failed")
    _write(result, out)


def _timm_files(config, state, folder, tag):
    """The state_dict as a .safetensors file, as timm releases are read."""
    from safetensors.numpy import save_file

    path = os.path.join(folder, f"{tag}.roundtrip.safetensors")
    save_file(state, path)
    return path


@_part
def convert(args, result):
    import keras
    import numpy as np

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
    if ref.get("status") == "skipped":
        result["timm"] = {"status": "skipped", "reason": ref["reason"]}
    for name in MODELS if ref.get("status") != "skipped" else ():
        try:
            golden = np.load(os.path.join(args.dir, f"{name}.golden.npz"))
            x = np.transpose(golden["input_nchw"], (0, 2, 3, 1))
            weights = convert_file("timm", name, os.path.join(args.dir, f"{name}.safetensors"))
            with keras.device(gpu):
                model = build_model(name, input_shape=x.shape[1:], weights=None,
                                    classifier_activation=None)
                assign_checked(model, weights, f"{name}.safetensors")
                got = model.predict_on_batch(x)
            rel = _rel(got, golden["logits"])
            result["timm"][name] = {"logits_rel": rel,
                                    "status": "ok" if rel < CONVERT_RTOL else "failed"}
        except Exception as e:
            result["timm"][name] = _error(e)
        keras.backend.clear_session()
        _write(result, args.out)
    # Keras → timm layout → Keras, for the mini networks of each timm-mapped family.
    configs = family_configs()
    x, _ = _data(2, 32 if args.dry_run else 64, 10)
    for family in ("sk_resnext", "sk_resnet", "resnext", "se_resnext"):
        try:
            with keras.device(gpu):
                keras.utils.set_random_seed(0)
                made = build_model(configs[family], input_shape=x.shape[1:], classes=10,
                                   classifier_activation=None)
                randomize_batch_norms(made)
                path = _timm_files(configs[family], keras_to_timm(made, configs[family]),
                                   args.dir, f"{family}.{frame['backend']}")
                back = build_model(configs[family], input_shape=x.shape[1:], classes=10,
                                   classifier_activation=None)
                assign_checked(back, convert_file("timm", configs[family], path), path)
                rel = _rel(back.predict_on_batch(x), made.predict_on_batch(x))
            result["keras_to_timm_and_back"][family] = {
                "logits_rel": rel, "status": "ok" if rel < 1e-6 else "failed"}
        except Exception as e:
            result["keras_to_timm_and_back"][family] = _error(e)
        keras.backend.clear_session()
        _write(result, args.out)
    result["status"] = _overall([*result["keras_to_timm_and_back"].values(),
                                 *([result["timm"]] if "status" in result["timm"]
                                   else result["timm"].values())])


# --- the benchmark ----------------------------------------------------------------------------

def _bench_jobs(backend):
    """(model, policy, Keras mode) in the order they run: what the time box cuts is last."""
    models = list(MODELS)
    if backend == "jax":
        return [(m, p, "xla") for p in POLICIES for m in models]
    return ([(m, POLICIES[0], "eager") for m in models] + [(models[0], POLICIES[0], "compiled")]
            + [(m, POLICIES[1], "eager") for m in models]
            + [(m, POLICIES[0], "compiled") for m in models[1:]]
            + [(m, POLICIES[1], "compiled") for m in models])


def _keras_runner(model_name, policy, mode, x, y, size):
    import keras

    from sknet_keras.applications import build_model

    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = build_model(model_name, input_shape=(size, size, 3), weights=None)
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy",
                      jit_compile=mode != "eager")
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return {"predict": lambda: model.predict_on_batch(x),
            "train": lambda: model.train_on_batch(x, y)}


class _Timm:
    """timm's models under torch.compile, AMP and channels_last, compiled once per model."""

    def __init__(self, timm, x, y):
        self.timm, self.x, self.y, self.models = timm, x, y, {}

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
        x, y = self.x.contiguous(memory_format=torch.channels_last), self.y

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


def _alternate(runners, batch, repeats):
    """img/s of each runner, inference then training, each repeat running every runner once
    in turn (what drifts on the GPU drifts alike for all). The first call's time (compiles)
    is reported apart."""
    out = {label: {} for label in runners}
    for mode in ("predict", "train"):
        for label, run in runners.items():
            start = time.perf_counter()
            run[mode]()
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


@_part
def bench(args, result):
    import keras

    frame, gpu, _ = _frame(args)
    backend = frame["backend"]
    batch, size, repeats = (2, 32, 2) if args.dry_run else (64, 224, 10)
    result.update(frame, batch=batch, image_size=size, repeats=repeats, jobs=[])
    timm, why = _import_timm() if backend == "torch" else (None, None)
    if backend == "torch":
        result["timm"] = ({"status": "skipped", "reason": why} if timm is None else
                          {"version": timm.__version__, "mode": "torch.compile, AMP, channels_last"})
        if timm is not None and gpu == "cpu:0":
            result["timm"] = {"status": "skipped", "reason": "no GPU (timm's AMP runs on CUDA)"}
            timm = None
    x, y = _data(batch, size, 1000)
    with keras.device(gpu):
        xd, yd = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)  # on the device
        reference = _Timm(timm, xd.permute(0, 3, 1, 2), yd.long()) if timm else None
        # Dry run: the mini networks of the same families in place of the 50-layer ones.
        configs = family_configs()
        minis = {"sknet50": configs["sk_resnext"], "resnext50": configs["resnext"],
                 "seresnext50": configs["se_resnext"]}
        for name, policy, mode in _bench_jobs(backend):
            job = {"model": name, "policy": policy, "keras_mode": mode}
            result["jobs"].append(job)
            if _time_left(args) < 20:
                job.update(status="not run", reason="time box")
                continue
            try:
                runners = {"keras": _keras_runner(minis[name] if args.dry_run else name, policy,
                                                  mode, xd, yd, size)}
                if reference:
                    runners["timm"] = reference.runner(MODELS[name], policy)
                job.update(_alternate(runners, batch, repeats), status="ok")
            except Exception as e:
                job.update(_error(e))
            keras.backend.clear_session()
            _write(result, args.out)
    result["status"] = _overall(result["jobs"])


# --- the summary ------------------------------------------------------------------------------

def _load(path, missing_reason):
    if os.path.exists(path):
        try:
            return json.load(open(path))
        except ValueError as e:
            return {"status": "failed", "reason": f"unreadable result {path}: {e}"}
    log = path.rsplit(".", 1)[0] + ".log"
    tail = open(log, errors="replace").read().strip().splitlines()[-12:] if os.path.exists(log) else []
    return {"status": "failed", "reason": missing_reason, "log_tail": tail}


def _bench_table(bench):
    """One row per (model, policy, backend mode): img/s, and the ratio to timm's same model
    and policy (timed alternately in the PyTorch child; JAX's against those figures)."""
    timm = {}
    for job in bench.get("torch", {}).get("jobs", []):
        if "timm" in job:
            key = (job["model"], job["policy"])
            timm.setdefault(key, job["timm"])
    rows = []
    for backend in ("jax", "torch"):
        for job in bench.get(backend, {}).get("jobs", []):
            row = {"model": job["model"], "policy": job["policy"],
                   "keras": f"{backend} {job['keras_mode']}", "status": job["status"]}
            if "keras" in job:
                ref = job.get("timm") or timm.get((job["model"], job["policy"]))
                for mode in ("predict", "train"):
                    speed = job["keras"][f"{mode}_img_s"]
                    row[f"{mode}_img_s"] = speed
                    if ref:
                        row[f"timm_{mode}_img_s"] = ref[f"{mode}_img_s"]
                        row[f"{mode}_vs_timm"] = round(speed / ref[f"{mode}_img_s"], 3)
            rows.append(row)
    return rows


def _tensorflow_parts(work):
    """The TensorFlow sections of tools/gpu_check.sh (a machine that has TensorFlow)."""
    def text(name):
        path = os.path.join(work, name)
        return open(path, errors="replace").read() if os.path.exists(path) else ""

    def tail(name, n=15):
        return text(name).strip().splitlines()[-n:]

    skipped = text("tf_skipped.txt").strip()
    if skipped:
        return {"status": "skipped", "reason": skipped,
                "parts": ["tests on the GPU", "sknet_keras.benchmark (TF, XLA)",
                          "trainer on 2 logical GPUs: kill and resume"]}
    if not os.path.exists(os.path.join(work, "tests.rc")):
        return {"status": "not run", "reason": "not among --sections"}
    rc = {n: int(text(f"{n}.rc") or -1) for n in ("tests", "whole", "resume")}
    bench = {}
    for jit in ("false", "true"):
        path = os.path.join(work, f"bench_jit_{jit}.json")
        bench[f"jit_compile={jit}"] = (json.load(open(path)) if os.path.exists(path)
                                       else {"error": tail(f"bench_jit_{jit}.txt")})
        bench[f"jit_compile={jit}"]["table"] = tail(f"bench_jit_{jit}.txt", 8)
    compare = text("compare.txt").strip().splitlines()
    return {
        "status": "ok" if not any(rc.values()) else "failed",
        "tests": {"status": rc["tests"], "tail": tail("tests.txt", 6)},
        "benchmark": bench,
        "kill_resume": {
            "uninterrupted_status": rc["whole"], "resumed_status": rc["resume"],
            "resumed_output": tail("killed2.txt", 6),
            "comparison": (json.loads(compare[-1]) if compare and compare[-1].startswith("{")
                           else compare)},
    }


def _status(node):
    """Every "status" below a node: ok, failed, skipped, not run (with their paths)."""
    found = []

    def walk(n, path):
        if isinstance(n, dict):
            if isinstance(n.get("status"), str):
                found.append((path, n["status"]))
            for k, v in n.items():
                walk(v, f"{path}/{k}" if path else k)
        elif isinstance(n, list):
            for i, v in enumerate(n):
                walk(v, f"{path}[{i}]")

    walk(node, "")
    return found


def summary(args):
    work = args.work
    sections = os.environ.get("GPU_CHECK_SECTIONS", "checks,bench,tensorflow").split(",")
    meta = _load(os.path.join(work, "machine.json"), "no machine description")
    out = {"machine": meta, "wheels": _load(os.path.join(work, "wheels.json"),
                                            "no wheels description")}
    if "checks" in sections:
        out["families"] = {b: _load(os.path.join(work, f"families.{b}.json"),
                                    "no result (crashed or killed by its time box)")
                           for b in ("jax", "torch")}
        out["converters"] = {
            "timm_reference": _load(os.path.join(work, "timm", "timm_reference.json"),
                                    "no result (crashed or killed by its time box)"),
            **{b: _load(os.path.join(work, f"convert.{b}.json"),
                        "no result (crashed or killed by its time box)") for b in ("jax", "torch")}}
    if "bench" in sections:
        bench = {b: _load(os.path.join(work, f"bench.{b}.json"),
                          "no result (crashed or killed by its time box)") for b in ("jax", "torch")}
        bench["table"] = _bench_table(bench)
        out["benchmark"] = bench
    out["tensorflow"] = _tensorflow_parts(work)
    children = {f"{s}.{b}": part.get("tensorflow_imported")
                for s in ("families", "converters", "benchmark")
                for b, part in out.get(s, {}).items() if isinstance(part, dict)
                and b in ("jax", "torch")}
    out["tensorflow_imported"] = children
    statuses = _status({k: v for k, v in out.items() if k != "tensorflow"})
    failed = [p for p, s in statuses if s == "failed"]
    out["skipped"] = [p + ": " + str(_find(out, p).get("reason", "")) for p, s in statuses
                      if s in ("skipped", "not run")]
    if out["tensorflow"]["status"] in ("skipped", "not run"):
        out["skipped"].append(f"tensorflow: {out['tensorflow']['reason']}")
    out["failed"] = failed
    out["status"] = "failed" if failed or any(children.values()) else "ok"
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, default=str)
    _print_summary(out)
    print("wrote", args.out)


def _find(node, path):
    import re

    for part in re.findall(r"[^/\[\]]+|\[\d+\]", path):
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    return node


def _print_summary(out):
    print(json.dumps(out["machine"], default=str))
    for backend, part in out.get("families", {}).items():
        fams = part.get("families", {})
        print(f"families {backend}: " + (", ".join(f"{k} {v['status']}" for k, v in fams.items())
                                         or f"{part.get('status')}: {part.get('reason')}"))
    for name, part in out.get("converters", {}).items():
        print(f"converters {name}: " + ", ".join(f"{p} {s}" for p, s in _status(part)))
    for row in out.get("benchmark", {}).get("table", []):
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    print("tensorflow:", out["tensorflow"]["status"], out["tensorflow"].get("reason", ""))
    print("skipped:", *out["skipped"], sep="\n  ")
    print("failed:", *(out["failed"] or ["none"]), sep="\n  ")
    print("status:", out["status"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["families", "timm_reference", "convert", "bench",
                                         "summary"])
    parser.add_argument("paths", nargs="+", help="OUT.json | DIR | DIR OUT.json | WORK OUT.json")
    parser.add_argument("--dry_run", action="store_true",
                        help="the CPU, mini configurations, tiny shapes")
    parser.add_argument("--deadline", type=float, default=0,
                        help="seconds after which no new item starts (0: none)")
    args = parser.parse_args()
    if os.environ.get("SKNET_GPU_CHECK_HIDE_TENSORFLOW"):
        sys.meta_path.insert(0, _NoTensorFlow())
    if args.part in ("families", "bench"):
        (args.out,) = args.paths
    elif args.part == "timm_reference":
        (args.dir,) = args.paths
    elif args.part == "convert":
        args.dir, args.out = args.paths
    else:
        args.work, args.out = args.paths
    {"families": families, "timm_reference": timm_reference, "convert": convert,
     "bench": bench, "summary": summary}[args.part](args)


if __name__ == "__main__":
    main()
