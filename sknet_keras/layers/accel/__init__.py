"""Faster ways to run the layers' computation, chosen per backend and CPU kernel set.

Nothing here changes what a layer computes: each path is held to NumPy or to the plain Keras
computation by tests/test_kernel_paths.py and tests/test_fast_paths.py. The layers ask these
modules which formulation to run when a function is traced.

Where → what runs → why:
- TensorFlow on a GPU, or on a CPU with oneDNN on → `tf.nn.conv2d` with the grouped kernel →
  cuDNN and oneDNN run groups natively.
- TensorFlow on a CPU with the Eigen kernels (TensorFlow's default without VNNI / bf16 / AMX),
  in a graph that stays in this process → TensorFlow's own oneDNN kernels called directly for
  grouped, dilated and (in training) dense k×k convolutions and training BatchNorm
  (`onednn_kernels`) → Eigen has no gradient for grouped or dilated convolutions, and its
  BatchNorm is slower.
- The same in an exported graph, under XLA, or in a TensorFlow build without those kernels →
  grouped convs as dense convs over blocks of 16 input channels, dilated ones through
  space-to-batch, depthwise ones as `depthwise_conv2d` (`conv_paths`) → only ops that every
  converter and runtime knows.
- TensorFlow, Eigen kernels, training → 1×1 convolutions as matrix products (`conv_paths`,
  `PointwiseConv2D`) → Eigen differentiates a 1×1 conv slower than the product.
- TensorFlow, inference in this process → the SK unit after its convolutions as one XLA
  function (`sk_paths`) → XLA fuses its ~8 passes over the activations into two.
- TensorFlow, training with `rematerialize=True` → the SK unit recomputed in the backward
  (`sk_paths`) → less memory.
- JAX on the CPU → grouped convs one per group, depthwise ones as a sum over taps
  (`keras_conv`) → XLA's CPU backend differentiates grouped convs far slower.
- PyTorch; JAX on a GPU / TPU → `keras.ops.conv` → the backend's grouped convolution is fast.
`conv_paths.conv_path` has the same table per convolution shape.

"Stays in this process" (`trace_scope`): eager calls, Keras' own `fit` / `evaluate` /
`predict` steps, and anything traced inside `staying_in_tensorflow()`. The private TensorFlow
and Keras APIs these paths use are all in `sknet_keras.internals`, each with a portable
fallback. docs/performance.md has the measurements.
"""

from sknet_keras.layers.accel.trace_scope import staying_in_tensorflow, traced_in_process

__all__ = ["staying_in_tensorflow", "traced_in_process"]
