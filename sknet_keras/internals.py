"""Every private TensorFlow / Keras API the package uses, in one place, each with a fallback.

The fast CPU paths (`sknet_keras.layers.accel`) need facts and ops that TensorFlow and Keras
expose to no public API. Each such use is an `Internal` here: how to fetch it, a tiny probe
that it still behaves as the package expects (against an independent computation where it
computes something), and the portable answer used where it does not. Each is checked once per
process, on first use; where the check fails, the fallback is used from then on and one
`InternalAPIWarning` names what was missing. Every fallback computes the same outputs and
gradients as the fast path, only slower (tests/test_internals.py removes or breaks each
internal in turn).

- `onednn_flag`: `tensorflow.python.util._pywrap_util_port.IsMklEnabled`, which CPU kernel
  set TensorFlow runs (oneDNN or Eigen). Fallback: TensorFlow's own rule (`onednn_rule`).
- `onednn_ops`: `tensorflow.python.framework.kernels`, `tensorflow.core.framework.attr_value_pb2`
  and `Graph.create_op` with a `_kernel` label, to call the `_MklNative*` convolution and
  BatchNorm kernels directly on the Eigen kernels. Probe: a grouped dilated conv with both
  gradients and a training BatchNorm with its gradient, against NumPy. Fallback: the plain
  TensorFlow ops (`conv_paths`' "blocked" / "space_to_batch" formulations).
- `xla_context`: `tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext`, to keep
  those ops out of XLA, which has none. Fallback: every graph is taken as XLA: the plain ops.
- `runtime_started_query`: `tensorflow.python.eager.context.context()._initialized`, to choose
  the caching CPU allocator only before TensorFlow fixes it. Fallback: taken as started, the
  allocator is left alone.
- `keras_steps`: `keras.src.backend.tensorflow.trainer`, found on the call stack
  (`sys._getframe`), to know that a trace is Keras' own `fit` / `evaluate` / `predict` step,
  which stays in this process. Fallback: taken as not; the fast paths run only inside
  `staying_in_tensorflow()`.

- `keras_hub_timm_loader`: `keras_hub.src.utils.timm.preset_loader.TimmPresetLoader`, which
  keras-hub's `from_preset` uses for timm repositories; `sknet_keras.hub` extends it with the
  package's architectures. Probe: `get_preset_loader` still takes the class from there.
  Fallback: none installed; `sknet_keras.hub.load_timm_preset` loads the same checkpoints.

keras-hub's and Keras' other private methods (`_call_python`, `_flatten_layers`) are no
longer used: the public `call` and a walk over public attributes do the same.
"""

import functools
import os
import platform
import sys
import warnings

from sknet_keras import numpy_reference


class InternalAPIWarning(RuntimeWarning):
    """A private TensorFlow / Keras API the package uses is missing or changed; the portable
    path is used instead (same results, slower)."""


class Internal:
    """One private API: `fetch()` returns it (raising if it is missing), `probe(value)` raises
    if it no longer behaves as expected; `fallback` is returned otherwise."""

    def __init__(self, name, what, fetch, probe, fallback, instead):
        self.name, self.what, self.fetch, self.probe = name, what, fetch, probe
        self.fallback, self.instead = fallback, instead

    def reset(self):
        self.__dict__.pop("_value", None)

    def get(self):
        """The internal (checked on the first call), or the fallback."""
        if "_value" not in self.__dict__:
            try:
                value = self.fetch()
                self.probe(value)
            except Exception as e:  # noqa: BLE001 - any failure: take the portable path
                warnings.warn(f"sknet_keras: {self.what} ({self.name}) is missing or changed in "
                              f"this version ({type(e).__name__}: {str(e)[:200]}); {self.instead}",
                              InternalAPIWarning, stacklevel=3)
                value = self.fallback
            self._value = value
        return self._value


def _nothing(_value):
    return None


# --- which CPU kernels TensorFlow runs -------------------------------------------------------

_ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
                         "amx_bf16")


@functools.lru_cache(maxsize=None)
def cpu_flags():
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def onednn_rule():
    """TensorFlow's own rule for its oneDNN switch (`IsMklEnabled`, tensorflow/tsl util_port):
    `TF_ENABLE_ONEDNN_OPTS` where set; otherwise on for x86 Linux CPUs with neural-network
    instructions, off elsewhere."""
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower()
    if value in ("1", "true"):
        return platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")
    if value in ("0", "false"):
        return False
    return (sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")
            and bool(set(_ONEDNN_DEFAULT_FLAGS) & cpu_flags()))


def _fetch_onednn_flag():
    from tensorflow.python.util import _pywrap_util_port

    return _pywrap_util_port.IsMklEnabled


def _probe_onednn_flag(is_mkl_enabled):
    if not isinstance(is_mkl_enabled(), bool):
        raise TypeError(f"IsMklEnabled() returned {is_mkl_enabled()!r}, not a bool")


onednn_flag = Internal(
    "tensorflow.python.util._pywrap_util_port.IsMklEnabled", "TensorFlow's oneDNN switch",
    _fetch_onednn_flag, _probe_onednn_flag, None,
    "the kernel set is read from TF_ENABLE_ONEDNN_OPTS and the CPU, as TensorFlow decides it")


def onednn_enabled():
    """True when TensorFlow runs its oneDNN CPU kernels in this process."""
    query = onednn_flag.get()
    return bool(query()) if query is not None else onednn_rule()


# --- TensorFlow's oneDNN kernels, called directly -------------------------------------------

ONEDNN_LABEL = "MklNameChangeOp"  # TensorFlow's mkl_op_registry::kMklNameChangeOpLabel
ONEDNN_OPS = ("_MklNativeConv2D", "_MklNativeConv2DBackpropInput", "_MklNativeConv2DBackpropFilter",
              "_MklNativeFusedBatchNormV3", "_MklNativeFusedBatchNormGradV3")


class _Absent(Exception):
    """The query exists and says this build has no such kernels (ARM, macOS): no warning."""


def _fetch_onednn_ops():
    from tensorflow.core.framework import attr_value_pb2
    from tensorflow.python.framework import kernels

    if not all(any(k.device_type == "CPU" and k.label == ONEDNN_LABEL
                   for k in kernels.get_registered_kernels_for_op(op).kernel)
               for op in ONEDNN_OPS):
        raise _Absent()
    return attr_value_pb2


def onednn_op(op_type, inputs, dtypes, **attrs):
    """One node of `op_type` with the oneDNN kernel label in the graph being traced; its
    outputs. Only where `onednn_ops.get()` is not None."""
    return _onednn_op(onednn_ops.get(), op_type, inputs, dtypes, **attrs)


def _onednn_op(attr_value_pb2, op_type, inputs, dtypes, **attrs):
    import tensorflow as tf

    def value(v):
        if isinstance(v, bool):
            return attr_value_pb2.AttrValue(b=v)
        if isinstance(v, float):
            return attr_value_pb2.AttrValue(f=v)
        if isinstance(v, str):
            return attr_value_pb2.AttrValue(s=v.encode())
        if isinstance(v, tf.DType):
            return attr_value_pb2.AttrValue(type=v.as_datatype_enum)
        return attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(i=list(v)))

    values = {"_kernel": value(ONEDNN_LABEL), "data_format": value("NHWC")}
    values.update((k, value(v)) for k, v in attrs.items())
    graph = tf.compat.v1.get_default_graph()
    return graph.create_op(op_type, inputs, dtypes, name=op_type.lstrip("_"),
                           attrs=values).outputs


def _probe_onednn_ops(attr_value_pb2):
    """A grouped dilated conv with both gradients and a training BatchNorm with its gradient,
    through the direct ops, equal to NumPy."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((2, 6, 6, 4)), rng.standard_normal((3, 3, 2, 6))
    dy = rng.standard_normal((2, 6, 6, 6))
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    f32 = tf.float32
    conv = dict(strides=[1, 1, 1, 1], padding="SAME", dilations=[1, 2, 2, 1], T=f32,
                use_cudnn_on_gpu=False, explicit_paddings=[])
    bn = dict(T=f32, U=f32, epsilon=1e-3, is_training=True)

    def onednn_op(*args, **kwargs):
        return _onednn_op(attr_value_pb2, *args, **kwargs)

    @tf.function(autograph=False)
    def direct(x, k, dy, gamma, beta):
        (y,) = onednn_op("_MklNativeConv2D", [x, k], [f32], is_filter_const=False, **conv)
        (dx,) = onednn_op("_MklNativeConv2DBackpropInput", [tf.shape(x), k, dy], [f32], **conv)
        (dk,) = onednn_op("_MklNativeConv2DBackpropFilter", [x, tf.shape(k), dy], [f32], **conv)
        empty = tf.constant([], f32)
        z, mean, var, *saved = onednn_op("_MklNativeFusedBatchNormV3",
                                         [x, gamma, beta, empty, empty], [f32] * 6,
                                         exponential_avg_factor=1.0, **bn)
        dz, dgamma, dbeta, _, _ = onednn_op("_MklNativeFusedBatchNormGradV3",
                                            [x, x, gamma, *saved], [f32] * 5, **bn)
        return y, dx, dk, z, dz, dgamma, dbeta

    with tf.init_scope():  # run eagerly, also when called while a function is being traced
        got = [t.numpy().astype(np.float64) for t in direct(
            *(tf.constant(a, f32) for a in (x, k, dy, gamma, beta)))]
    want = [*numpy_reference.grouped_conv(x, k, dy, groups=2, dilation=2),
            *numpy_reference.batch_norm(x, gamma, beta, 1e-3, upstream=x)]
    for name, g, w in zip(("conv", "conv input gradient", "conv filter gradient", "batch norm",
                           "batch norm gradient", "gamma gradient", "beta gradient"), got, want):
        if g.shape != w.shape or not np.allclose(g, w, rtol=1e-3, atol=1e-3):
            raise AssertionError(f"the direct {name} differs from NumPy")


class _OneDNNOps(Internal):
    def get(self):
        if "_value" not in self.__dict__:
            try:
                self.fetch()
            except _Absent:  # a build without these kernels, by design: nothing to warn of
                self._value = None
                return None
            except Exception:  # noqa: BLE001 - Internal.get warns
                pass
        return super().get()


onednn_ops = _OneDNNOps(
    "tensorflow.python.framework.kernels, tensorflow.core.framework.attr_value_pb2 and "
    "Graph.create_op with the kernel label " + ONEDNN_LABEL,
    "TensorFlow's oneDNN kernels called directly (" + ", ".join(ONEDNN_OPS) + ")",
    _fetch_onednn_ops, _probe_onednn_ops, None,
    "grouped and dilated convolutions and BatchNorm use the plain TensorFlow ops (slower on "
    "the Eigen kernels)")


# --- XLA ------------------------------------------------------------------------------------

def _fetch_xla_context():
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext


def _probe_xla_context(in_xla):
    import tensorflow as tf

    seen = {}

    def record(jit):
        def f(x):
            seen[jit] = in_xla(tf.compat.v1.get_default_graph())
            return x
        tf.function(f, jit_compile=jit).get_concrete_function(tf.TensorSpec((), tf.float32))

    with tf.init_scope():
        record(True)
        record(False)
    if seen != {True: True, False: False}:
        raise AssertionError(f"it answered {seen} for (XLA, plain) functions")


xla_context = Internal(
    "tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext",
    "TensorFlow's test for an XLA-compiled graph", _fetch_xla_context, _probe_xla_context, None,
    "every graph is taken as XLA-compiled: the plain ops, which XLA has")


def in_xla_context(graph):
    """Whether `graph` (or a graph it is nested in) is compiled by XLA."""
    test = xla_context.get()
    return True if test is None else bool(test(graph))


# --- TensorFlow's runtime -------------------------------------------------------------------

def _fetch_runtime_started():
    from tensorflow.python.eager import context

    ctx = context.context()
    if not hasattr(ctx, "_initialized"):
        raise AttributeError("the eager context has no _initialized")
    return lambda: bool(ctx._initialized)


def _probe_runtime_started(started):
    if not isinstance(started(), bool):
        raise TypeError("not a bool")


runtime_started_query = Internal(
    "tensorflow.python.eager.context.context()._initialized",
    "TensorFlow's record of whether its runtime has started", _fetch_runtime_started,
    _probe_runtime_started, None,
    "the runtime is taken as started: the CPU allocator is left as TensorFlow chose it")


def runtime_started():
    """TensorFlow's eager context (its devices, hence its CPU allocator) exists already."""
    query = runtime_started_query.get()
    return True if query is None else query()


# --- Keras' traced steps --------------------------------------------------------------------

# Considered instead of the call-stack walk: overriding `train_step` / `predict_step` reaches
# only models of the package's own class, not a user's `keras.Model(inputs, base(inputs))`
# (the transfer-learning case), whose steps Keras traces without any hook of ours; a Keras
# callback runs outside the traced step. So the walk stays, here, with its fallback.
_KERAS_STEPS = "keras.src.backend.tensorflow.trainer"


def _fetch_keras_steps():
    import importlib

    module = importlib.import_module(_KERAS_STEPS)
    sys._getframe  # noqa: B018 - CPython's frame access
    return module


def _probe_keras_steps(module):
    trainer = module.TensorFlowTrainer
    for step in ("make_train_function", "make_test_function", "make_predict_function"):
        if getattr(trainer, step).__module__ != _KERAS_STEPS:
            raise AssertionError(f"TensorFlowTrainer.{step} is no longer defined there")


keras_steps = Internal(
    _KERAS_STEPS + " on the call stack (sys._getframe)", "Keras' traced fit / predict steps",
    _fetch_keras_steps, _probe_keras_steps, None,
    "fit / evaluate / predict use the plain ops (slower on the CPU); "
    "sknet_keras.layers.accel.staying_in_tensorflow() still takes the fast paths")


def traced_by_keras_step():
    """A frame of Keras' TensorFlow trainer (its train / test / predict step) is on the stack."""
    if keras_steps.get() is None:
        return False
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__") == _KERAS_STEPS:
            return True
        frame = frame.f_back
    return False


# --- keras-hub's timm loader ------------------------------------------------------------------

def _fetch_timm_loader():
    import importlib

    module = importlib.import_module("keras_hub.src.utils.timm.preset_loader")
    module.TimmPresetLoader  # noqa: B018 - what sknet_keras.hub extends
    return module


def _probe_timm_loader(module):
    """keras-hub's `get_preset_loader` looks the class up in that module when it loads a
    folder whose config.json names an `architecture`."""
    import json
    import tempfile

    from keras_hub.src.utils.preset_utils import get_preset_loader

    original = module.TimmPresetLoader
    marker = type("Probe", (original,), {"__init__": lambda self, preset, config: None})
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"architecture": "probe"}, f)
        module.TimmPresetLoader = marker
        try:
            loader = get_preset_loader(folder)
        finally:
            module.TimmPresetLoader = original
    if type(loader) is not marker:
        raise AssertionError("get_preset_loader no longer takes TimmPresetLoader from there")


keras_hub_timm_loader = Internal(
    "keras_hub.src.utils.timm.preset_loader.TimmPresetLoader", "keras-hub's timm loader",
    _fetch_timm_loader, _probe_timm_loader, None,
    "keras-hub's from_preset does not load timm checkpoints of this package's networks; "
    "sknet_keras.hub.load_timm_preset(handle) does")


INTERNALS = (onednn_flag, onednn_ops, xla_context, runtime_started_query, keras_steps,
             keras_hub_timm_loader)
