"""Selective Kernel Networks (SKNet), the ResNeXt / SENet baselines, ShuffleNetV2 and
SE-BN-Inception for Keras 3: builders, layers, weights, a trainer and the paper's analysis.

Importing the package, or any of its library modules (`layers`, `applications`, `hub`, ...),
changes nothing in the process: no environment variable, file descriptor or TensorFlow setting.
The `python -m sknet_keras...` commands own their process: they import `sknet_keras.cli`
first, which quiets TensorFlow's start-up and calls `use_caching_allocator()`.
"""

__version__ = "0.2.0"


def use_caching_allocator():
    """Choose TensorFlow's caching CPU allocator for this process where its Eigen kernels are in
    use (faster training on them); call it before TensorFlow runs its first op (later, it warns
    and changes nothing). It sets TensorFlow's environment variables for this, which child
    processes inherit. Returns whether it chose it (`sknet_keras.cpu_allocator` says when it
    does not)."""
    from sknet_keras import cpu_allocator

    return cpu_allocator.use_caching_allocator(warn_if_late=True)
