"""What every converter shares: the family dispatch, and the layout transforms (PyTorch and
Caffe store alike)."""

import importlib

import numpy as np

from sknet_keras.registry import family, get_model_config


def family_mapping(source, model_config, include_top=True):
    """{Keras weight path: (source key, transform or None)}: the converter that the model's
    `Family` record names for `source`."""
    config = get_model_config(model_config)
    record = family(config)
    target = record.converters.get(source)
    if target is None:
        others = ", ".join(f"--source={s}" for s in record.converters) or "none"
        raise ValueError(f"{config.name!r} is a {config.family} network, which has no {source} "
                         f"release to convert (sources of {config.family} networks: {others})")
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)(config, include_top)


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
