"""Convert public releases (timm, torchvision, the official Caffe releases) to Keras weights.

    from sknet_keras.convert import convert
    convert("timm", "sknet50", "skresnext50_ra-f40e40bf.pth", "sknet50.weights.h5")
    model = SKNet50(weights="sknet50.weights.h5")

- `releases`: `convert`, `convert_file`, `read_source`, `source_to_keras`, `SOURCES`.
- `timm`, `torchvision`, `caffe` (+ `caffe_bn_inception`): each source's reader and its
  mapping to Keras weight paths; `pth`: PyTorch files without PyTorch; `common`: shared.

Names are imported lazily: `python -m sknet_keras.convert` imports this package before its
command module, which quiets TensorFlow's start-up before anything imports TensorFlow.
"""

import importlib

_EXPORTS = {"convert": "releases", "convert_file": "releases", "read_source": "releases",
            "source_to_keras": "releases", "SOURCES": "releases"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
