"""TensorFlow's own oneDNN CPU kernels, called directly where its Eigen kernels are in use.

`TF_ENABLE_ONEDNN_OPTS` (off by default on CPUs without AVX-512) only switches the graph pass
that rewrites `Conv2D` into `_MklNativeConv2D` and so on: the x86 builds of TensorFlow register
the oneDNN kernels either way, and a graph that names them runs them, with the ISA of the CPU
it runs on (AVX2 included). On the Eigen kernels they are the fastest correct formulation
measured for what Eigen does slowly (docs/performance.md, 2026-12-06; batch 16, 224², 2 cores):
- grouped and dilated convolutions and their gradients: SKNet-50 inference 1.2× and training
  1.2× faster than the best Eigen formulations (`group_conv`'s "blocked", "space_to_batch");
- training-mode BatchNorm and its gradient: with the convolutions, SKNet-50 training 1.44×;
- dense k×k convolutions in training: SE-ResNet-50's step 1.14× faster.
Depthwise and 1×1 convolutions, and dense ones at inference, measured no faster this way
and stay on Eigen.

Written by hand because TensorFlow exposes these ops to no public API; `_kernel` is the label
they are registered under. They are used only where `usable()` says so: a graph that stays in
this process (`trace_scope`), outside XLA (which has no such ops), in float32, when this
TensorFlow registers them. Everything else (exports, converters, ARM and macOS builds) gets
the plain ops.
"""

import functools

from sknet_keras.layers import kernel_support, trace_scope

_LABEL = "MklNameChangeOp"  # TensorFlow's mkl_op_registry::kMklNameChangeOpLabel
_OPS = ("_MklNativeConv2D", "_MklNativeConv2DBackpropInput", "_MklNativeConv2DBackpropFilter",
        "_MklNativeFusedBatchNormV3", "_MklNativeFusedBatchNormGradV3")


@functools.lru_cache(maxsize=None)
def registered():
    """This TensorFlow has a CPU kernel for every op used here (x86 builds do)."""
    try:
        from tensorflow.python.framework import kernels
        return all(any(k.device_type == "CPU" and k.label == _LABEL
                       for k in kernels.get_registered_kernels_for_op(op).kernel)
                   for op in _OPS)
    except Exception:  # noqa: BLE001 - an op or the query missing: not registered
        return False


def usable(dtype="float32"):
    """Called directly here: Eigen kernels in use, a CPU-only graph that stays in this process,
    outside XLA, in float32 (bf16 kernels exist only on CPUs with native bf16)."""
    if dtype != "float32" or kernel_support.onednn_enabled() or not registered():
        return False
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    if tf.executing_eagerly() or kernel_support.gpu_available():
        return False
    if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return False
    return trace_scope.stays_in_tensorflow()


def _op(op_type, inputs, dtypes, **attrs):
    """One node of `op_type` in the graph being traced, with the oneDNN kernel label."""
    import tensorflow as tf
    from tensorflow.core.framework import attr_value_pb2

    def value(v):
        if isinstance(v, bool):
            return attr_value_pb2.AttrValue(b=v)
        if isinstance(v, float):
            return attr_value_pb2.AttrValue(f=v)
        if isinstance(v, str):
            return attr_value_pb2.AttrValue(s=v.encode())
        if isinstance(v, tf.DType):
            return attr_value_pb2.AttrValue(type=v.as_datatype_enum)
        return attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(i=list(v)))

    values = {"_kernel": value(_LABEL), "data_format": value("NHWC")}
    values.update((k, value(v)) for k, v in attrs.items())
    graph = tf.compat.v1.get_default_graph()
    return graph.create_op(op_type, inputs, dtypes, name=op_type.lstrip("_"),
                           attrs=values).outputs


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
