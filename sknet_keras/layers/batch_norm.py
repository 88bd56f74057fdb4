"""BatchNorm: Keras' BatchNormalization, run through TensorFlow's fused kernel when it can.

Written because Keras 3 computes batch normalization from separate ops (moments, then
scale and shift: three passes over the activations in training), while TensorFlow's
`FusedBatchNormV3` does it in one oneDNN/cuDNN kernel, and at inference lets Grappler fold
it into the preceding convolution (except with oneDNN on the CPU at batch 1, where the
folded convolution is the slow one: `_fold_costs_per_call`). Same variables, names and config as Keras' layer, so
weight files and converters are unaffected. Like PyTorch and cuDNN, the moving variance is
updated with the unbiased batch variance.

The fused path is taken on the TensorFlow backend for 4D channels-last inputs with no mask,
no renormalization and no cross-replica synchronization; everything else falls back to
Keras' implementation.
"""

import keras
from keras import ops

from sknet_keras.layers import options
from sknet_keras.layers.accel import kernel_support, onednn_kernels

_register = keras.saving.register_keras_serializable(package="sknet_keras")


def _fused_ok(layer, inputs, mask):
    return (
        layer._own_training(mask)
        and keras.backend.backend() == "tensorflow"
        and len(inputs.shape) == 4
        and layer.axis in (-1, 3)
    )


def _fold_costs_per_call(batch_size):
    """Whether Grappler's folding of inference BN into the convolution before it costs more
    than it saves: with oneDNN on the CPU, at batch 1, the folded convolutions are ~10×
    slower (SKNet-50 0.40 against 4.29 img/s unfolded, SE-BN-Inception 1.30 against 11.08);
    from batch 2 up folding is 0–7 % faster (docs/performance.md). A batch size unknown when
    traced (a served model) may be 1, so it is not folded there either. The Eigen kernels
    and the GPU fold at every batch size."""
    return (batch_size in (None, 1) and kernel_support.onednn_enabled()
            and not kernel_support.gpu_available())


def _fused_input(layer, x):
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
        x = tf.cast(x, layer.compute_dtype)
    return x


@_register
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with TensorFlow's fused kernel (see module doc).

    `synchronized` defaults to the enclosing `build_options(sync_bn=...)`.
    """

    def __init__(self, *args, synchronized=None, **kwargs):
        if synchronized is None:
            synchronized = options.current().sync_bn
        super().__init__(*args, synchronized=synchronized, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable and self._own_training(mask):
            y, mean, variance = self.normalize_batch(inputs)
            self.update_moving_statistics(mean, variance)
            return ops.cast(y, self.compute_dtype)
        if not _fused_ok(self, inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if _fold_costs_per_call(inputs.shape[0]):
            # Scale and shift, as Keras computes it: no FusedBatchNormV3 for Grappler to fold.
            x = ops.cast(inputs, "float32")
            scale = self.gamma * ops.rsqrt(self.moving_variance + self.epsilon)
            shift = self.beta - self.moving_mean * scale
            return ops.cast(x * scale + shift, self.compute_dtype)
        import tensorflow as tf

        x = _fused_input(self, inputs)
        gamma = tf.cast(self.gamma.value, tf.float32)
        beta = tf.cast(self.beta.value, tf.float32)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta,
            mean=tf.cast(self.moving_mean.value, tf.float32),
            variance=tf.cast(self.moving_variance.value, tf.float32),
            epsilon=self.epsilon, data_format="NHWC", is_training=False)
        return y

    def _own_training(self, mask):
        """BN this class computes itself (else Keras' own: masks, renorm, sync)."""
        return (mask is None and not self.synchronized and not getattr(self, "renorm", False)
                and self.center and self.scale)

    def normalize_batch(self, x):
        """Training-mode BN with the batch's statistics.

        Returns (y, batch mean, unbiased batch variance) and updates nothing, so that a
        recomputation in the backward (`SelectiveKernel(rematerialize=True)`) does not move
        the moving averages twice. 4D NHWC on TensorFlow: the fused kernel; otherwise
        moments, with the variance made unbiased as the fused kernel (and PyTorch) return it,
        so every backend and rank updates the moving variance alike.
        """
        if _fused_ok(self, x, None):
            import tensorflow as tf

            x = _fused_input(self, x)
            gamma = tf.cast(self.gamma.value, tf.float32)
            beta = tf.cast(self.beta.value, tf.float32)
            if onednn_kernels.usable(x.dtype.name):  # Eigen's kernels: 1.1× slower training
                return onednn_kernels.batch_norm_training(x, gamma, beta, self.epsilon)
            return tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon,
                                                    data_format="NHWC", is_training=True)
        x = ops.cast(x, "float32")
        axis = self.axis % len(x.shape)
        axes = [i for i in range(len(x.shape)) if i != axis]
        mean, variance = ops.moments(x, axes=axes)
        y = ops.batch_normalization(x, mean, variance, axis=axis,
                                    offset=ops.cast(self.beta, "float32"),
                                    scale=ops.cast(self.gamma, "float32"),
                                    epsilon=self.epsilon)
        n = ops.cast(ops.size(x), "float32") / float(x.shape[axis])
        return y, mean, variance * n / ops.maximum(n - 1.0, 1.0)

    def update_moving_statistics(self, mean, variance):
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + ops.cast(mean, "float32") * (1 - m))
        self.moving_variance.assign(
            self.moving_variance * m + ops.cast(variance, "float32") * (1 - m))
