"""The optional parts of the install: which extra brings which package.

`pip install sknet-keras` brings what the layers, models, `applications`, weights and
converters use. The trainer, the analysis figures, the exports and the keras-hub classes
import their packages when they run, through `require`, so a missing one is a one-line
error that says what to install (the commands print it as such: `sknet_keras.cli`).
"""

import importlib

# Importable module -> (distribution, extra that installs it).
PACKAGES = {
    "tensorflow_datasets": ("tensorflow-datasets", "train"),
    "sklearn": ("scikit-learn", "train"),
    "keras_cv": ("keras-cv", "train"),
    "tensorboard": ("tensorboard", "train"),
    "matplotlib": ("matplotlib", "analysis"),
    "ai_edge_litert": ("ai-edge-litert", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "tf2onnx": ("tf2onnx", "export"),
    "onnx": ("onnx", "export"),
    "keras_hub": ("keras-hub", "hub"),
    "huggingface_hub": ("huggingface-hub", "hub"),
}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the extra to install."""


def require(module, purpose):
    """Import `module` (a key of PACKAGES, or a submodule of one) for `purpose`, or raise
    MissingExtraError naming the pip command that installs it."""
    top = module.split(".")[0]
    distribution, extra = PACKAGES[top]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] != top:
            raise  # the package is there but broken: not a missing extra
        raise MissingExtraError(f'{purpose} needs {distribution}, which is not installed: '
                                f'pip install "sknet-keras[{extra}]"', name=top) from None
