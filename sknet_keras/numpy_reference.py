"""Independent NumPy computations that `sknet_keras.internals` holds TensorFlow's private
kernels to before using them (written from the definitions, loops and all: slow and plain)."""

import numpy as np


def grouped_conv(x, k, dy, groups, dilation):
    """A stride-1, SAME-padded, dilated grouped conv and its two gradients, in NumPy."""
    kh, kw, gin, cout = k.shape
    gout = cout // groups
    p = dilation * (kh - 1) // 2
    xp = np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
    n, h, w, _ = x.shape
    y, dxp, dk = np.zeros((n, h, w, cout)), np.zeros_like(xp), np.zeros_like(k)
    for g in range(groups):
        ci, co = slice(g * gin, (g + 1) * gin), slice(g * gout, (g + 1) * gout)
        for a in range(kh):
            for b in range(kw):
                tap = xp[:, a * dilation:a * dilation + h, b * dilation:b * dilation + w, ci]
                y[..., co] += tap @ k[a, b, :, co]
                dxp[:, a * dilation:a * dilation + h, b * dilation:b * dilation + w, ci] += \
                    dy[..., co] @ k[a, b, :, co].T
                dk[a, b, :, co] += np.einsum("nhwc,nhwo->co", tap, dy[..., co])
    return y, dxp[:, p:p + h, p:p + w], dk


def batch_norm(x, gamma, beta, epsilon, upstream):
    """Training-mode BatchNorm over (N, H, W) and its gradients for the output gradient
    `upstream`: (output, input gradient, gamma gradient, beta gradient)."""
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    xhat = (x - mean) / np.sqrt(var + epsilon)
    m = x.size // x.shape[-1]
    dgamma, dbeta = (upstream * xhat).sum(axis=(0, 1, 2)), upstream.sum(axis=(0, 1, 2))
    dx = gamma / np.sqrt(var + epsilon) / m * (m * upstream - dbeta - xhat * dgamma)
    return xhat * gamma + beta, dx, dgamma, dbeta
