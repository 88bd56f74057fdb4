"""TensorFlow's own oneDNN CPU kernels, called directly where its Eigen kernels are in use.

`TF_ENABLE_ONEDNN_OPTS` (off by default on CPUs without AVX-512) only switches the graph pass
that rewrites `Conv2D` into `_MklNativeConv2D` and so on: the x86 builds of TensorFlow register
the oneDNN kernels either way, and a graph that names them runs them, with the ISA of the CPU
it runs on (AVX2 included). On the Eigen kernels they are the fastest correct formulation
measured for what Eigen does slowly (docs/performance.md; batch 16, 224², 2 cores):
- grouped and dilated convolutions and their gradients: SKNet-50 inference 1.2× and training
  1.2× faster than the best Eigen formulations (`group_conv`'s "blocked", "space_to_batch");
- training-mode BatchNorm and its gradient: with the convolutions, SKNet-50 training 1.44×;
- dense k×k convolutions in training: SE-ResNet-50's step 1.14× faster.
Depthwise and 1×1 convolutions, and dense ones at inference, measured no faster this way
and stay on Eigen.

Written by hand because TensorFlow exposes these ops to no public API: building them is a
private use kept in `sknet_keras.internals` (`onednn_op`), checked once against NumPy. They
are used only where `usable()` says so: a graph that stays in this process (`trace_scope`),
outside XLA (which has no such ops), in float32, when this TensorFlow has them. Everything
else (exports, converters, ARM and macOS builds) gets the plain ops.
"""


from sknet_keras import internals
from sknet_keras.layers.accel import kernel_support, trace_scope

_op = internals.onednn_op


def registered():
    """This TensorFlow has every op used here, and they compute what NumPy does (checked once:
    `sknet_keras.internals.onednn_ops`)."""
    return internals.onednn_ops.get() is not None


def usable(dtype="float32"):
    """Called directly here: Eigen kernels in use, a CPU-only graph that stays in this process,
    outside XLA, in float32 (bf16 kernels exist only on CPUs with native bf16)."""
    if dtype != "float32" or kernel_support.onednn_enabled():
        return False
    import tensorflow as tf

    if tf.executing_eagerly() or kernel_support.gpu_available():
        return False
    if not trace_scope.stays_in_tensorflow() or not registered():
        return False
    return not internals.in_xla_context(tf.compat.v1.get_default_graph())


def conv2d(x, kernel, strides, padding, dilations):
    """`tf.nn.conv2d(x, kernel, ...)` (NHWC, any groups: cin / kernel's input channels) with
    its gradients, on oneDNN's kernels. `strides`, `dilations`: pairs; padding SAME / VALID."""
    import tensorflow as tf

    attrs = dict(strides=[1, *strides, 1], padding=padding, dilations=[1, *dilations, 1],
                 T=x.dtype, use_cudnn_on_gpu=False, explicit_paddings=[])

    @tf.custom_gradient
    def conv(x, kernel):
        (y,) = _op("_MklNativeConv2D", [x, kernel], [x.dtype], is_filter_const=False, **attrs)

        def grad(dy):
            (dx,) = _op("_MklNativeConv2DBackpropInput", [tf.shape(x), kernel, dy], [x.dtype],
                        **attrs)
            (dk,) = _op("_MklNativeConv2DBackpropFilter", [x, tf.shape(kernel), dy],
                        [x.dtype], **attrs)
            return dx, dk

        return y, grad

    return conv(x, kernel)


def batch_norm_training(x, gamma, beta, epsilon):
    """`tf.compat.v1.nn.fused_batch_norm(..., is_training=True)` on oneDNN's kernels:
    (y, batch mean, unbiased batch variance), differentiable in x, gamma and beta."""
    import tensorflow as tf

    f32 = tf.float32
    attrs = dict(T=x.dtype, U=f32, epsilon=float(epsilon), is_training=True)

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        empty = tf.constant([], f32)
        y, mean, variance, *saved = _op("_MklNativeFusedBatchNormV3",
                                        [x, gamma, beta, empty, empty], [x.dtype] + [f32] * 5,
                                        exponential_avg_factor=1.0, **attrs)

        def grad(dy, _dmean, _dvariance):  # the statistics only feed the moving averages
            dx, dgamma, dbeta, _, _ = _op("_MklNativeFusedBatchNormGradV3",
                                          [dy, x, gamma, *saved], [x.dtype] + [f32] * 4,
                                          **attrs)
            return dx, dgamma, dbeta

        return (y, mean, variance), grad

    return normalize(x, gamma, beta)
