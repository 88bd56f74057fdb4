"""GroupConv2D's formulations on the other Keras backends, in `keras.ops` (`group_conv.conv_path`).

JAX on the CPU (XLA's CPU convolution; docs/performance.md), fwd / fwd+bwd, batch 8: a
grouped conv as one `feature_group_count` conv takes 135 / 10888 ms at 32×32×128, g32, one
conv per group ("split") 70 / 119 ms, a block-diagonal dense conv 113 / 513 ms, depthwise-
and-sum 187 / 43036 ms; a depthwise conv (ShuffleNetV2, 28×28×116) 72 / 263 ms native,
3.4 / 56 ms as a sum over the kernel's taps of shifted slices times per-channel weights.
"""

from keras import ops


def conv(path, x, kernel, groups, strides, dilation, padding):
    """Run one of the non-TensorFlow paths (`group_conv.conv_path`) on NHWC `x` (already
    padded when `padding` is VALID)."""
    if path == "keras":
        return ops.conv(x, kernel, strides=strides, padding=padding.lower(),
                        dilation_rate=dilation)
    if path == "split":
        return ops.concatenate(
            [ops.conv(a, b, strides=strides, padding=padding.lower(), dilation_rate=dilation)
             for a, b in zip(ops.split(x, groups, axis=-1), ops.split(kernel, groups, axis=-1))],
            axis=-1)
    # "taps": depthwise, one output per channel: Σ over taps of a shifted slice × the tap's
    # per-channel weights (elementwise work whose gradient XLA fuses; see the table).
    kh, kw = kernel.shape[:2]
    (sh, sw), (dh, dw) = strides, dilation
    if padding == "SAME":  # used only where it equals symmetric padding (stride 1)
        ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
        x = ops.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
    h, w = x.shape[1], x.shape[2]
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    y = None
    for i in range(kh):
        for j in range(kw):
            tap = x[:, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                    j * dw: j * dw + sw * (wo - 1) + 1: sw, :] * kernel[i, j, 0]
            y = tap if y is None else y + tap
    return y
