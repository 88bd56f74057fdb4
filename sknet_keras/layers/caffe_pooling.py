"""CaffePooling2D: MAX / AVE pooling with Caffe's output size and Caffe's AVE divisor.

Written because Keras' pooling layers cannot reproduce Caffe's, which converted Caffe
networks (the SENet release's SE-BN-Inception) need to the last bit:
- Caffe sizes its output in ceil mode, `ceil((H + 2p - k) / s) + 1`, so the last window may
  run off the bottom / right edge (dropped again if it would start beyond the left padding
  plus the input); Keras' "valid" floors, and "same" pads on both sides at stride 2;
- Caffe's AVE divides by the window clipped to the *padded* input, so padding zeros count
  (border windows of a 3×3/1 pad-1 pool divide by 9), except for the part of a ceil-mode
  window that runs beyond the padding; Keras' AveragePooling2D divides by the number of
  input elements in the window (by 4 or 6 at the borders).
The layer pads (−∞ for MAX, zeros for AVE), pools with "valid" windows, keeps Caffe's number
of windows and, for AVE, rescales each window sum by Caffe's divisor.
"""

import keras
from keras import ops

_register = keras.saving.register_keras_serializable(package="sknet_keras")

POOLS = ("max", "avg")


def _select(cond, a, b):
    """`a if cond else b` for Python values and for tensors (dynamic sizes)."""
    return (a if cond else b) if isinstance(cond, bool) else ops.where(cond, a, b)


def caffe_pooled_size(size, pool_size, strides, padding, match_conv=False):
    """Caffe's PoolingLayer::Reshape output size (int or tensor); `match_conv` grows it to
    that of a k×k/s convolution padded by k // 2 (see `CaffePooling2D`)."""
    out = -((pool_size - size - 2 * padding) // strides) + 1  # ceil division
    if padding:  # the last window must start inside the input or the left padding
        out = _select((out - 1) * strides >= size + padding, out - 1, out)
    if match_conv:
        conv = (size + 2 * (pool_size // 2) - pool_size) // strides + 1
        out = _select(conv > out, conv, out)
    return out


@_register
class CaffePooling2D(keras.layers.Layer):
    """Caffe's MAX / AVE pooling (NHWC): ceil-mode output size, Caffe's AVE divisor.

    Args:
        pool: "max" or "avg".
        pool_size, strides, padding: ints (square windows, symmetric padding < pool_size).
        match_conv: where ceil mode gives one window fewer than a pool_size / strides
            convolution padded by pool_size // 2 (odd inputs at stride 2), add that window,
            clipped to the input. Equal to Caffe wherever both sizes agree; it lets the
            branches of an Inception reduction module concatenate at any input size (Caffe
            aborts there).
    """

    def __init__(self, pool="max", pool_size=3, strides=1, padding=0, match_conv=False,
                 **kwargs):
        super().__init__(**kwargs)
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}; got {pool!r}")
        self.pool = pool
        self.pool_size, self.strides, self.padding = int(pool_size), int(strides), int(padding)
        if not (1 <= self.strides <= self.pool_size and 0 <= self.padding < self.pool_size):
            raise ValueError(  # larger strides leave Caffe windows wholly outside the input
                "CaffePooling2D needs 1 <= strides <= pool_size and 0 <= padding < pool_size; "
                f"got pool_size={pool_size}, strides={strides}, padding={padding}")
        self.match_conv = bool(match_conv)

    def _size(self, size):
        return caffe_pooled_size(size, self.pool_size, self.strides, self.padding,
                                 self.match_conv)

    def _tail(self):
        """Static bottom/right padding that makes room for every window of `_size`."""
        tail = self.padding + self.strides - 1
        if self.match_conv:
            tail = max(tail, 2 * (self.pool_size // 2) - self.padding)
        return max(tail, 0)

    def _avg_divisor(self, size, out):
        """Per output index: the window's extent clipped to the padded input (Caffe)."""
        start = ops.arange(out, dtype="int32") * self.strides - self.padding
        end = ops.minimum(start + self.pool_size, size + self.padding)
        return ops.cast(end - start, "float32")

    def call(self, inputs):
        shape = ops.shape(inputs)
        h, w = shape[1], shape[2]
        out_h, out_w = self._size(h), self._size(w)
        p, tail = self.padding, self._tail()
        fill = float("-inf") if self.pool == "max" else 0.0
        x = ops.pad(inputs, [[0, 0], [p, tail], [p, tail], [0, 0]], constant_values=fill)
        k, s = self.pool_size, self.strides
        if self.pool == "max":
            return ops.max_pool(x, k, s, padding="valid")[:, :out_h, :out_w]
        y = ops.average_pool(x, k, s, padding="valid")[:, :out_h, :out_w]
        rows, cols = self._avg_divisor(h, out_h), self._avg_divisor(w, out_w)
        scale = float(k * k) / (rows[:, None] * cols[None, :])
        return y * ops.cast(scale[None, :, :, None], y.dtype)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, None if h is None else self._size(h), None if w is None else self._size(w),
                c)

    def get_config(self):
        config = super().get_config()
        config.update(pool=self.pool, pool_size=self.pool_size, strides=self.strides,
                      padding=self.padding, match_conv=self.match_conv)
        return config
