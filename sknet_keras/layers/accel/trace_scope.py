"""Whether the graph being traced stays in this TensorFlow process, or may be handed on.

Two fast paths build graphs that only this process's TensorFlow runs well:
- the SK layers' XLA-fused inference (`sk_paths`): an XLA function inside a graph does not
  survive conversion (tf2onnx leaves a node onnxruntime refuses; the LiteRT converter wrote
  files with wrong logits, or NaN, without a word);
- on TensorFlow's Eigen CPU kernels, TensorFlow's own oneDNN kernels called directly
  (`onednn_kernels`): op types that TensorFlow builds without oneDNN (ARM, macOS) and the
  converters do not know.
They run only where the graph stays here: eagerly, in the steps Keras traces for `fit` /
`evaluate` / `predict` (found on the call stack: `sknet_keras.internals.traced_by_keras_step`,
where the reason for a stack walk is given), and inside `staying_in_tensorflow()` (the
trainer's own loops; a user's `tf.function` traced there). Every other trace (`model.export`
in any format, the LiteRT converter, tf2onnx, `tf.saved_model.save`, any other `tf.function`)
gets plain TensorFlow ops that every converter and runtime takes.
"""

import contextlib
import functools

from sknet_keras import internals

_scopes = 0


@contextlib.contextmanager
def staying_in_tensorflow():
    """Graphs traced inside stay in this process: they may use the fast paths above."""
    global _scopes
    _scopes += 1
    try:
        yield
    finally:
        _scopes -= 1


def traced_in_process(fn):
    """`fn`, traced inside `staying_in_tensorflow()` (for `tf.function(traced_in_process(f))`:
    a function that is never exported, like the trainer's loops)."""
    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with staying_in_tensorflow():
            return fn(*args, **kwargs)

    return traced


def stays_in_tensorflow():
    """Eager, inside `staying_in_tensorflow`, or traced by Keras' own train / test /
    predict step."""
    import tensorflow as tf

    return bool(_scopes or tf.executing_eagerly() or internals.traced_by_keras_step())
