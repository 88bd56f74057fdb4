"""The SK unit's element-wise part as one XLA-compiled function (TensorFlow backend).

After the branch convolutions, an SK unit is all memory traffic: BN and ReLU per branch,
the sum, a global mean, the attention MLP, the softmax and the weighted sum. As separate
TensorFlow ops that is ~8 passes over N×H×W×C tensors per branch; XLA fuses them into two
(one for the mean, one for the weighted output), which measured 2.5× faster than the ops
graph on this CPU (16×56×56×128: 3.2 vs 8.0 ms). The convolutions stay outside XLA, on
oneDNN / cuDNN, where grouped convolutions are fast (XLA's CPU grouped conv is not).

Inference only (BN with moving statistics): in training, XLA's CPU code for the BN backward
measured slower than TensorFlow's fused kernels, so `SelectiveKernel` takes its reference
path there. Numerics are the reference path's: float32 inside, softmax over branches.
"""

import tensorflow as tf


def _select(feats, fuse_kernel, fuse_bn, select_kernel, eps):
    s = tf.add_n([tf.reduce_mean(f, axis=[1, 2]) for f in feats])
    gamma, beta, mean, var = fuse_bn
    z = tf.nn.relu((tf.matmul(s, fuse_kernel) - mean) * (tf.math.rsqrt(var + eps) * gamma) + beta)
    m, c = len(feats), feats[0].shape[-1]
    attn = tf.nn.softmax(tf.reshape(tf.matmul(z, select_kernel), [-1, m, c]), axis=1)
    v = feats[0] * attn[:, None, None, 0, :]
    for i in range(1, m):
        v += feats[i] * attn[:, None, None, i, :]
    return v, attn


@tf.function(jit_compile=True)
def _sk_select_inference(convs, branch_bn, fuse_kernel, fuse_bn, select_kernel, eps):
    """XLA compiles this per input shape (once per unit and batch size)."""
    feats = []
    for c, (gamma, beta, mean, var) in zip(convs, branch_bn):
        c = tf.cast(c, tf.float32)
        feats.append(tf.nn.relu((c - mean) * (tf.math.rsqrt(var + eps) * gamma) + beta))
    v, attn = _select(feats, fuse_kernel, fuse_bn, select_kernel, eps)
    return tf.cast(v, convs[0].dtype), attn


def sk_select(convs, branch_bn, fuse_kernel, fuse_bn, select_kernel, eps):
    """Inference-mode BN+ReLU of each branch conv output, fuse, select → (V, attention).

    branch_bn, fuse_bn: (gamma, beta, moving mean, moving variance), float32.
    """
    return _sk_select_inference(list(convs), [tuple(b) for b in branch_bn], fuse_kernel,
                                tuple(fuse_bn), select_kernel, float(eps))


def _branch_feats(convs, means, variances, gammas, betas, eps):
    return [tf.nn.relu((tf.cast(c, tf.float32) - mu) * (tf.math.rsqrt(var + eps) * g) + b)
            for c, mu, var, g, b in zip(convs, means, variances, gammas, betas)]


def sk_train_rematerialized(convs, gammas, betas, eps, select_fn):
    """Training-mode SK select that keeps only the branch conv outputs for the backward.

    The branch BN+ReLU outputs (two N×H×W×C tensors per branch, the bulk of an SK unit's
    activation memory) are recomputed in the backward pass (`tf.recompute_grad`) from the conv
    outputs and the batch statistics, which are computed here, outside, so that gradients
    flow through them as in ordinary BN. `select_fn(s)` maps the pooled sum (N, C) to the
    attention (N, M, C); it runs normally (its tensors are small).

    Returns V, the attention, and the per-branch (mean, biased variance) batch statistics.
    """
    m = len(convs)
    stats = [tf.nn.moments(tf.cast(c, tf.float32), [0, 1, 2]) for c in convs]
    means = [s[0] for s in stats]
    variances = [s[1] for s in stats]
    out_dtype = convs[0].dtype

    @tf.recompute_grad
    def pooled(*args):
        feats = _branch_feats(args[:m], args[m:2 * m], args[2 * m:3 * m], args[3 * m:4 * m],
                              args[4 * m:], eps)
        return tf.add_n([tf.reduce_mean(f, axis=[1, 2]) for f in feats])

    @tf.recompute_grad
    def weighted(*args):
        attn = args[-1]
        feats = _branch_feats(args[:m], args[m:2 * m], args[2 * m:3 * m], args[3 * m:4 * m],
                              args[4 * m:5 * m], eps)
        v = feats[0] * attn[:, None, None, 0, :]
        for i in range(1, m):
            v += feats[i] * attn[:, None, None, i, :]
        return tf.cast(v, out_dtype)

    flat = list(convs) + means + variances + list(gammas) + list(betas)
    attn = select_fn(pooled(*flat))
    return weighted(*flat, attn), attn, stats
