"""Selective Kernel Networks (SKNet), the ResNeXt / SENet baselines, ShuffleNetV2 and
SE-BN-Inception for Keras 3: builders, layers, weights, a trainer and the paper's analysis."""

import sys

__version__ = "0.2.0"

# `python -m sknet_keras.<command>` imports this package before the command's module, while
# sys.argv[0] is still "-m": quiet TensorFlow's start-up before anything imports it. A
# library import (`import sknet_keras`) is left alone.
if sys.argv[:1] == ["-m"]:
    from sknet_keras import cli  # noqa: F401
