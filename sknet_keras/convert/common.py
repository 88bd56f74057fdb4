"""Layout transforms shared by every converter (PyTorch and Caffe store alike)."""

import numpy as np


def conv_kernel(w):
    """PyTorch / Caffe (O, I/g, kh, kw) → Keras (kh, kw, I/g, O)."""
    return np.transpose(w, (2, 3, 1, 0))


def dense_kernel(w):
    """PyTorch Linear / Caffe InnerProduct (O, I) → Keras Dense (I, O)."""
    return np.transpose(w)


def pointwise_kernel(w):
    """1×1 conv on a pooled vector (O, I, 1, 1) → Keras Dense (I, O)."""
    return np.transpose(w.reshape(w.shape[0], w.shape[1]))


def flat(w):
    """BN / bias blobs may be stored (C,) or (1, C, 1, 1)."""
    return np.reshape(w, (-1,))


# Keras → PyTorch layouts, for exporting (the inverse of each transform above).
INVERSE = {
    conv_kernel: lambda w: np.transpose(w, (3, 2, 0, 1)),
    dense_kernel: np.transpose,
    pointwise_kernel: lambda w: np.transpose(w)[:, :, None, None],
    None: lambda w: w,
}


def listing(title, items, limit=12):
    """"  title (n): a, b, ... (n in all)" for error messages."""
    shown = ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit
                                        else "")
    return f"  {title} ({len(items)}): {shown}"
