"""How a `SelectiveKernel` runs: one chooser over three paths that compute the same function.

All three call the one computation, `selective_kernel.split_fuse_select` (passed in by the
layer, so that this module does not import it), and differ only in how they compute BN and
where the ops run:

- "reference": Keras ops, any backend, BN as Keras layers in the call's mode.
- "fused" (TensorFlow, inference): everything after the branch convolutions — BN and ReLU per
  branch, the sum, the global mean, the attention MLP, the softmax and the weighted sum — is
  one XLA-compiled function. As separate TensorFlow ops that is ~8 passes over N×H×W×C
  tensors per branch; XLA fuses them into two, which is faster (docs/performance.md). The convolutions
  stay outside XLA, on oneDNN / cuDNN, where grouped convolutions are fast.
- "remat" (TensorFlow, training, `rematerialize=True`, unsynchronized BN): keeps only the
  layer's input for the backward and reruns the unit there (`tf.recompute_grad`), so none
  of its N×H×W×C intermediates stays alive between forward and backward.

Training otherwise takes the reference path: XLA's CPU code for the BN backward measured
slower than TensorFlow's fused BN kernels. Tests hold all paths equal
(docs/performance.md has the measurements).

"fused" runs only where the graph stays in TensorFlow (`trace_scope`): eagerly, in the steps
Keras traces for `predict` / `evaluate` / `fit`, and inside `trace_scope.staying_in_tensorflow()`.
Every other trace (exports, converters, a user's own `tf.function`) gets the reference ops.
"""

import keras
from keras import ops

from sknet_keras.layers.accel import trace_scope

IMPLEMENTATIONS = ("auto", "reference")


def choose(layer, training):
    """"reference", "fused" or "remat" for one call of `layer`."""
    if (layer.implementation != "auto" or not layer.attention
            or keras.backend.backend() != "tensorflow"):
        return "reference"
    batch_stats = bool(training) and layer.attn.fuse_bn.trainable
    if not batch_stats:
        return "fused" if trace_scope.stays_in_tensorflow() else "reference"
    if layer.rematerialize and not any(getattr(bn, "synchronized", False)
                                       for bn in layer.branch_bns):
        return "remat"
    return "reference"


# --- fused inference ------------------------------------------------------------------------

def _tf():
    import tensorflow as tf

    return tf


def _fused_select(split_fuse_select, convs, branch_bn, fuse_kernel, fuse_bn, select_kernel, eps,
                  relu):
    """`split_fuse_select` in float32 with BN as the moving statistics' affine map."""
    tf = _tf()
    params = list(branch_bn) + [fuse_bn]

    def normalize(i, x):
        gamma, beta, mean, var = params[i]
        return (x - mean) * (tf.math.rsqrt(var + eps) * gamma) + beta

    v, attn = split_fuse_select([tf.cast(c, tf.float32) for c in convs], normalize,
                                        "relu" if relu else None, fuse_kernel, select_kernel)
    return tf.cast(v, convs[0].dtype), attn


_compiled = None


def _compiled_select():
    """XLA compiles the function once per input shape (once per unit and batch size)."""
    global _compiled
    if _compiled is None:
        _compiled = _tf().function(_fused_select, jit_compile=True)
    return _compiled


def fused_inference(layer, inputs, split_fuse_select):
    """Inference with moving statistics: branch convs, then one XLA function → (V, a)."""
    tf = _tf()

    def f32(variable):
        return tf.cast(variable.value, tf.float32)

    def bn_params(bn):
        return tuple(f32(w) for w in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))

    convs = layer.branch_convolutions(inputs)
    attn = layer.attn
    return _compiled_select()(
        split_fuse_select, convs, [bn_params(b) for b in layer.branch_bns], f32(attn.fuse_conv.kernel),
        bn_params(attn.fuse_bn), f32(attn.select_conv.kernel), float(attn.fuse_bn.epsilon),
        layer.branch_activation == "relu")


# --- rematerialized training ----------------------------------------------------------------

def _train_forward(layer, inputs):
    """Training-mode forward that updates no variable (safe to recompute).

    Returns [V, attention, then per BN (branches, then fuse) its batch mean and variance]
    for the caller to update the moving averages once.
    """
    norms = layer.batch_norms
    stats = [None] * (2 * len(norms))

    def normalize(i, x):
        y, stats[2 * i], stats[2 * i + 1] = norms[i].normalize_batch(x)
        return ops.cast(y, layer.compute_dtype)

    v, attn = layer.split_fuse_select(inputs, normalize)
    return [v, attn] + stats


def rematerialized_training(layer, inputs):
    """Training step keeping only the layer's input; moving averages updated here, once."""
    tf = _tf()
    outs = tf.recompute_grad(lambda x: _train_forward(layer, x))(inputs)
    v, a, stats = outs[0], outs[1], outs[2:]
    for i, bn in enumerate(layer.batch_norms):
        bn.update_moving_statistics(*(tf.stop_gradient(t) for t in stats[2 * i:2 * i + 2]))
    return v, a
