"""The SK computation after the branch convolutions, written once.

Every way a `SelectiveKernel` runs (`sk_paths`) calls `split_fuse_select`; the paths differ
only in the `normalize` they pass: Keras' BN in the layer's mode (the reference), batch
statistics that update nothing (a backward that recomputes the unit), or the moving
statistics as float32 arithmetic inside one XLA function (fused inference). So the paths
cannot drift apart: the sum, the pooling, the attention MLP, the softmax over branches and
the weighted sum exist here only.
"""

from keras import ops


def branch_sum(feats):
    """U = Σ_m U_m."""
    u = feats[0]
    for f in feats[1:]:
        u = u + f
    return u


def select(feats, attention):
    """V = Σ_m a_m ⊙ U_m, attention (N, M, C) cast to the features' dtype."""
    weights = ops.cast(attention, feats[0].dtype)
    v = feats[0] * weights[:, None, None, 0, :]
    for m in range(1, len(feats)):
        v = v + feats[m] * weights[:, None, None, m, :]
    return v


def attention(u, fuse_kernel, normalize_fuse, select_kernel, num_branches):
    """Fuse and select: U (N, H, W, C) → a (N, M, C) in float32, a softmax over the M axis.

    s = mean over H, W; z = ReLU(BN(s W_fuse)); logits = z W_select, laid out branch-major.
    The projections are bias-free matrix products in the features' dtype.
    """
    s = ops.mean(u, axis=(1, 2))
    z = ops.relu(normalize_fuse(ops.matmul(s, ops.cast(fuse_kernel, s.dtype))))
    logits = ops.matmul(z, ops.cast(select_kernel, z.dtype))
    logits = ops.reshape(logits, (-1, num_branches, u.shape[-1]))
    return ops.softmax(ops.cast(logits, "float32"), axis=1)


def split_fuse_select(convs, normalize, activation, fuse_kernel=None, select_kernel=None):
    """(V, a) from the M branch convolutions.

    `normalize(i, x)` is BN number i: the branches' BNs are 0..M-1, the fuse BN is M.
    `activation` is "relu" or None (after each branch's BN). Without kernels (the paper's
    no-attention ablation) the result is (U, None).
    """
    feats = [normalize(i, c) for i, c in enumerate(convs)]
    if activation == "relu":
        feats = [ops.relu(f) for f in feats]
    u = branch_sum(feats)
    if fuse_kernel is None:
        return u, None
    m = len(convs)
    a = attention(u, fuse_kernel, lambda h: normalize(m, h), select_kernel, m)
    return select(feats, a), a
