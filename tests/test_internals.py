"""Each private TensorFlow / Keras API (`sknet_keras.internals`) removed or broken in turn: every
family still builds, predicts and trains through Keras' `predict` and `train_on_batch`, with
the outputs and gradients of the run that had it, and one warning names what was missing."""

import sys
import types
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_kernel_paths import FAMILY_NAMES, _assert_steps_equal, family_config

from sknet_keras import cpu_allocator, internals
from sknet_keras.applications import build_model
from sknet_keras.layers.accel import kernel_support

LR = 0.1


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _reset():
    for internal in internals.INTERNALS:
        internal.reset()
    kernel_support.onednn_enabled.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_internals():
    _reset()
    yield
    _reset()  # the cached fallback of a broken internal must not outlive its test


def _run(config):
    """Logits of `predict`, and the loss, gradients and weights of one `train_on_batch` step
    of plain SGD (gradient = (before - after) / LR), from the same seed each time."""
    keras.utils.set_random_seed(0)
    model = build_model(config, input_shape=(32, 32, 3), classes=5)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical([0, 1, 2, 4], 5)
    logits = model.predict(x, verbose=0)
    model.compile(keras.optimizers.SGD(LR), keras.losses.CategoricalCrossentropy())
    before = {v.path: v.numpy() for v in model.trainable_variables}
    loss = model.train_on_batch(x, y)
    after = {v.path: v.numpy() for v in model.trainable_variables}
    grads = {p: (before[p] - after[p]) / LR for p in before}
    return logits, (float(loss), grads, after)


_REFERENCE = {}


def _reference(family):
    """The run with every internal in place (once per family and process)."""
    if family not in _REFERENCE:
        with warnings.catch_warnings():
            warnings.simplefilter("error", internals.InternalAPIWarning)  # all present here
            _REFERENCE[family] = _run(family_config(family))
        keras.backend.clear_session()
    return _REFERENCE[family]


# --- the ways each internal can go ----------------------------------------------------------

def _without(mp, module_name, attribute):
    """`module_name` as the package would import it now, lacking `attribute` (TensorFlow's own
    modules keep the real one: they imported it before)."""
    import importlib

    real = importlib.import_module(module_name)
    stand_in = types.ModuleType(module_name)
    stand_in.__dict__.update({k: v for k, v in vars(real).items() if k != attribute})
    parent, _, child = module_name.rpartition(".")
    mp.setitem(sys.modules, module_name, stand_in)
    mp.setattr(importlib.import_module(parent), child, stand_in)


def _remove_onednn_flag(mp):
    _without(mp, "tensorflow.python.util._pywrap_util_port", "IsMklEnabled")


def _break_onednn_flag(mp):
    from tensorflow.python.util import _pywrap_util_port

    mp.setattr(_pywrap_util_port, "IsMklEnabled", lambda: "unknown")


def _remove_onednn_ops(mp):
    _without(mp, "tensorflow.python.framework.kernels", "get_registered_kernels_for_op")


def _break_onednn_ops(mp):
    """The attributes no longer fit: TensorFlow fills a dropped `dilations` with its default."""
    real = tf.Graph.create_op

    def create_op(self, op_type, inputs, dtypes=None, *args, attrs=None, **kwargs):
        if op_type.startswith("_MklNative") and attrs:
            attrs = {k: v for k, v in attrs.items() if k != "dilations"}
        return real(self, op_type, inputs, dtypes, *args, attrs=attrs, **kwargs)

    mp.setattr(tf.Graph, "create_op", create_op)


def _remove_xla_context(mp):
    _without(mp, "tensorflow.python.ops.control_flow_util", "GraphOrParentsInXlaContext")


def _break_xla_context(mp):
    _without(mp, "tensorflow.python.ops.control_flow_util", "GraphOrParentsInXlaContext")
    sys.modules["tensorflow.python.ops.control_flow_util"].GraphOrParentsInXlaContext = \
        lambda graph: False


def _remove_keras_steps(mp):
    mp.setitem(sys.modules, internals._KERAS_STEPS, None)  # the module moved


def _break_keras_steps(mp):
    """The step functions moved to another module: frames of the old one are no longer theirs."""
    trainer = sys.modules[internals._KERAS_STEPS].TensorFlowTrainer
    real = trainer.make_predict_function
    moved = types.FunctionType(real.__code__, {**real.__globals__, "__name__": "elsewhere"},
                               real.__name__, real.__defaults__, real.__closure__)
    moved.__module__ = "elsewhere"
    mp.setattr(trainer, "make_predict_function", moved)


CASES = {
    "onednn_flag-removed": (internals.onednn_flag, _remove_onednn_flag),
    "onednn_flag-broken": (internals.onednn_flag, _break_onednn_flag),
    "onednn_ops-removed": (internals.onednn_ops, _remove_onednn_ops),
    "onednn_ops-broken": (internals.onednn_ops, _break_onednn_ops),
    "xla_context-removed": (internals.xla_context, _remove_xla_context),
    "xla_context-broken": (internals.xla_context, _break_xla_context),
    "keras_steps-removed": (internals.keras_steps, _remove_keras_steps),
    "keras_steps-broken": (internals.keras_steps, _break_keras_steps),
}


# One way each internal goes, for every family (large tier); every way for SK-ResNeXt
# (grouped, dilated, the SK fast paths) in the default tier.
EVERY_FAMILY = ("onednn_flag-removed", "onednn_ops-broken", "xla_context-removed",
                "keras_steps-removed")


def _params():
    for case in sorted(CASES):
        for family in FAMILY_NAMES:
            if family == "sk_resnext":
                yield pytest.param(case, family, id=f"{case}-{family}")
            elif case in EVERY_FAMILY:
                marks = [pytest.mark.large] + ([pytest.mark.exhaustive]
                                               if case != EVERY_FAMILY[0] else [])
                yield pytest.param(case, family, marks=marks, id=f"{case}-{family}")


@pytest.mark.kernels
@pytest.mark.parametrize("case,family", _params())
def test_every_family_runs_alike_without_each_internal(case, family, monkeypatch):
    want_logits, want_step = _reference(family)
    _reset()
    internal, take_away = CASES[case]
    take_away(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got_logits, got_step = _run(family_config(family))
    named = [w for w in caught if issubclass(w.category, internals.InternalAPIWarning)]
    if internals.onednn_enabled() and internal in (internals.onednn_ops, internals.xla_context):
        # Under TensorFlow's own oneDNN kernels the layers make no direct oneDNN calls, so
        # these two are never consulted: nothing to warn of, and the same outputs.
        assert not named, [str(w.message) for w in named]
    else:
        assert len(named) == 1 and internal.name in str(named[0].message), [
            str(w.message) for w in named]
        assert internal.get() is internal.fallback
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-4,
                               atol=1e-5 * np.abs(want_logits).max())
    _assert_steps_equal(got_step, want_step, f"{family} without {case}")


def test_the_onednn_rule_agrees_with_tensorflows_answer():
    """The fallback of the oneDNN query is TensorFlow's own rule: it gives TensorFlow's answer
    in this process (CI runs this file under oneDNN on and off)."""
    assert internals.onednn_rule() == internals.onednn_enabled()


def test_without_the_runtime_query_the_allocator_is_left_alone(monkeypatch):
    from tensorflow.python.eager import context

    monkeypatch.setattr(context, "context", lambda: types.SimpleNamespace())
    monkeypatch.delenv(cpu_allocator.USE_BFC, raising=False)
    with pytest.warns(internals.InternalAPIWarning, match="_initialized"):
        assert cpu_allocator.use_caching_allocator() is False
    assert cpu_allocator.USE_BFC not in __import__("os").environ
    assert internals.runtime_started() is True  # the fallback: assume started


def test_every_internal_is_present_and_checked_in_this_version():
    """The versions CI installs have each internal: a fallback here would be a silent slowdown."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", internals.InternalAPIWarning)
        values = {i.name: i.get() for i in internals.INTERNALS
                  if i is not internals.keras_hub_timm_loader or _has("keras_hub")}
    assert all(v is not None for n, v in values.items()
               if n != internals.onednn_ops.name), values
    if sys.platform.startswith("linux") and kernel_support.cpu_flags() & {"avx2", "avx512f"}:
        assert values[internals.onednn_ops.name] is not None  # x86 builds register them
