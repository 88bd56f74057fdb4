"""Which formulation runs a convolution, and the TensorFlow formulations themselves.

`conv_path` decides, when a function is traced, for the backend and kernels this process has
(`kernel_support`); `tf_conv` runs the TensorFlow paths, `keras_conv.conv` the others. All
formulations compute the same convolution (tests/test_kernel_paths.py holds each to NumPy).
"""

import keras
from keras import ops

from sknet_keras.layers.accel import kernel_support, onednn_kernels

# --- which formulation runs where ---------------------------------------------------------
#
# One place decides, when the function is traced, for the kernels this process has
# (`kernel_support`). All formulations compute the same convolution; the Eigen rows exist
# because TensorFlow's Eigen CPU kernels have no gradient for grouped or dilated convolutions
# and Grappler's fused conv + BN refuses groups at inference. cin/g = input channels per group.
#
# | where                                | convolution              | path             |
# |--------------------------------------|--------------------------|------------------|
# | PyTorch backend; JAX on a GPU / TPU  | any                      | "keras"          |
# | JAX on the CPU                       | groups 1; depthwise ×m   | "keras"          |
# | JAX on the CPU                       | depthwise (cin/g = 1)    | "taps"           |
# | JAX on the CPU                       | cin/g > 1                | "split"          |
# | GPU; CPU with oneDNN                 | any                      | "native"         |
# | CPU with oneDNN, bf16 (native)       | grouped and dilated      | "space_to_batch" |
# | CPU, Eigen kernels                   | 1×1, groups 1, training  | "matmul"         |
# | CPU, Eigen kernels, inference        | groups 1, no dilation    | "native"         |
# | CPU, Eigen kernels                   | depthwise (cin/g = 1)    | "depthwise"      |
# | CPU, Eigen kernels, in process (1)   | any other                | "onednn"         |
# | CPU, Eigen kernels, elsewhere        | groups 1, no dilation    | "native"         |
# | CPU, Eigen kernels, elsewhere        | groups 1, dilated        | "space_to_batch" |
# | CPU, Eigen kernels, elsewhere        | cin/g > 1                | "blocked"        |
# (1) `onednn_kernels.usable()`: TensorFlow's oneDNN kernels called directly in a graph that
# stays in this process, outside XLA. Faster than the "elsewhere" rows: SKNet-50 1.2×
# (inference) and 1.5× (training, with BN), SE-ResNet-50's dense 3×3 convs 1.14× (training).
# Elsewhere: exports, converters, XLA, non-x86 TensorFlow builds.
# On the CPU, float16 (any kernels) and bfloat16 (unless oneDNN with native bf16) convolutions
# compute in float32: TensorFlow has no CPU backprop kernels for them there.
# Eigen, "blocked": one dense conv per block of groups (16 input channels,
# `BLOCK_INPUT_CHANNELS`) with a block-diagonal kernel; fwd / fwd+bwd, batch 16, ms: SKNet
# conv2 (56²×128, g32) 25 / 124 against 56 / 135 depthwise-and-sum and 77 / 223 one conv per
# group, dilated 35 / 126 against 115 / 265 and 80 / 232. Eigen, "matmul" (training only; at
# inference a 1×1 conv fuses with its BN): 7²×1024 → 2048 17 / 53 against 19 / 139 as a conv.
# Both: docs/performance.md, 2026-12-05, with the formulations that were slower.
# JAX on the CPU: measurements in `keras_conv`.

BLOCK_INPUT_CHANNELS = 16

PATHS = ("keras", "native", "matmul", "onednn", "space_to_batch", "depthwise", "blocked", "split",
         "taps")


def conv_path(groups, in_channels, dilation, dtype, filters=None, kernel_size=(3, 3),
              training=True):
    """The formulation (one of `PATHS`) that runs this convolution; see the table above.

    `filters` (output channels) tells a depthwise conv from one with a channel multiplier;
    `training` False (inference) keeps a 1×1 conv a conv, which Grappler fuses with its BN.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        if backend != "jax" or not kernel_support.jax_on_cpu() or groups == 1:
            return "keras"
        group_channels = in_channels // groups
        if group_channels > 1:
            return "split"
        return "taps" if filters == groups else "keras"
    dilated = max(dilation) > 1
    if kernel_support.gpu_available():
        return "native"
    if kernel_support.onednn_enabled():
        if dtype == "bfloat16" and not compute_float32(dtype) and groups > 1 and dilated:
            # TF 2.21's oneDNN bf16 filter gradient of a grouped dilated conv is NaN from
            # about 32×32 up (SKNet-50's 56×56 stage); the forward and input gradient are right.
            return "space_to_batch"
        return "native"
    if groups == 1:
        if tuple(kernel_size) == (1, 1) and training:
            return "matmul"
        if not dilated and not training:
            return "native"  # Grappler fuses it with its BN
    elif in_channels == groups:
        return "depthwise"
    if onednn_kernels.usable("float32" if compute_float32(dtype) else dtype):
        return "onednn"
    if groups == 1:
        return "space_to_batch" if dilated else "native"
    return "blocked"


def blocked_groups(groups, group_in):
    """Groups per block of the "blocked" path: the most that fit `BLOCK_INPUT_CHANNELS`."""
    block = max(1, min(groups, BLOCK_INPUT_CHANNELS // group_in))
    while groups % block:
        block -= 1
    return block


def compute_float32(dtype):
    """Whether a float16 / bfloat16 convolution on the CPU computes in float32 (see table)."""
    if dtype not in ("float16", "bfloat16") or keras.backend.backend() != "tensorflow":
        return False
    if kernel_support.gpu_available():
        return False
    if dtype == "bfloat16":
        return not (kernel_support.onednn_enabled() and kernel_support.cpu_native_bfloat16())
    return True


def in_compute_precision(conv, x, kernel, dtype):
    """`conv(x, kernel)`, in float32 and cast back where `compute_float32(dtype)` says so."""
    if not compute_float32(dtype):
        return conv(x, kernel)
    return ops.cast(conv(ops.cast(x, "float32"), ops.cast(kernel, "float32")), dtype)


def pointwise_matmul(x, kernel, strides):
    """A 1×1 conv as one matrix product (TensorFlow); strided: samples its input first (exact)."""
    import tensorflow as tf

    x = subsample(x, *strides)
    shape = tf.shape(x)
    y = tf.matmul(tf.reshape(x, (-1, kernel.shape[2])), tf.reshape(kernel, kernel.shape[2:]))
    return tf.reshape(y, tf.concat([shape[:3], [kernel.shape[3]]], 0))


def tf_conv(path, x, kernel, groups, strides, dilation, padding, kernel_size, training=True):
    """Run one of the TensorFlow paths on NHWC `x` (already padded when padding is VALID)."""
    import tensorflow as tf

    def plain(inp, k, pad=padding, rate=dilation):
        return tf.nn.conv2d(inp, k, strides=[1, *strides, 1], padding=pad,
                            dilations=[1, *rate, 1])

    def dilated(convs, inp, k):
        """`convs(inp, k, pad, rate)` dilated: space-to-batch around undilated convs (gradients
        everywhere); at inference natively (Eigen, 56²×128: 28 against 44 ms), same gradient."""
        def via_space_to_batch(inp, k):
            return tf.nn.with_space_to_batch(
                inp, dilation_rate=list(dilation), padding=padding, filter_shape=kernel_size,
                op=lambda i, num_spatial_dims, padding: convs(i, k, padding, (1, 1)))

        if max(dilation) == 1:
            return convs(inp, k, padding, (1, 1))
        if training:
            return via_space_to_batch(inp, k)

        @tf.custom_gradient
        def natively(inp, k):
            def grad(dy):
                with tf.GradientTape() as tape:
                    tape.watch([inp, k])
                    y = via_space_to_batch(inp, k)
                return tape.gradient(y, [inp, k], output_gradients=dy)
            return convs(inp, k, padding, dilation), grad

        return natively(inp, k)

    if path == "native":
        return plain(x, kernel)
    if path == "matmul":
        return pointwise_matmul(x, kernel, strides)
    if path == "onednn":
        return onednn_kernels.conv2d(x, kernel, strides, padding, dilation)
    if path == "space_to_batch":
        return dilated(plain, x, kernel)
    kh, kw, group_in, filters = kernel.shape
    group_out = filters // groups
    if path == "blocked":
        # A dense conv per block of groups, block-diagonal kernel (Eigen's conv is efficient
        # from ~16 input channels), built by slices, pads and concats: 4-D ops that LiteRT folds
        # (its int8 quantizer left a tiled-and-masked one unfolded; a 6-D transpose isn't built in).
        block = blocked_groups(groups, group_in)
        blocks = groups // block
        k = kernel
        if block > 1:  # group g's columns, padded to its place in its block
            padded = [tf.pad(kernel[..., g * group_out:(g + 1) * group_out], [[0, 0]] * 3 + [
                [g % block * group_out, (block - 1 - g % block) * group_out]])
                for g in range(groups)]
            k = tf.concat([tf.concat(padded[i * block:(i + 1) * block], axis=2)
                           for i in range(blocks)], axis=-1)

        def convs(inp, k, pad, rate):
            if blocks == 1:
                return plain(inp, k, pad, rate)
            return tf.concat([plain(a, b, pad, rate) for a, b in
                              zip(tf.split(inp, blocks, axis=-1), tf.split(k, blocks, axis=-1))],
                             axis=-1)

        return dilated(convs, x, k)
    # Depthwise: output channel g·m + o is input channel g ⊛ w[..., 0, g·m + o].
    return tf.nn.depthwise_conv2d(x, tf.reshape(kernel, (kh, kw, groups, group_out)),
                                  strides=[1, *strides, 1], padding=padding, dilations=list(dilation))


def subsample(x, sh, sw):
    """x[:, ::sh, ::sw, :] (NHWC), computed as a 1×1 strided max pool (see module doc)."""
    if sh == 1 and sw == 1:
        return x
    return ops.max_pool(x, pool_size=1, strides=(sh, sw), padding="valid")
