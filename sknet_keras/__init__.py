"""Selective Kernel Networks (SKNet), the ResNeXt / SENet baselines, ShuffleNetV2 and
SE-BN-Inception for Keras 3: builders, layers, weights, a trainer and the paper's analysis.

Importing the package does nothing else: no TensorFlow, no command-line handling. The
`python -m sknet_keras...` commands import `sknet_keras.cli` first, which chooses their
CPU kernels and quiets TensorFlow's start-up.
"""

__version__ = "0.2.0"
