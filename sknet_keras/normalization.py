"""Input normalization: the modes, their constants and the one function that applies them.

Weights expect their publisher's preprocessing of RGB images in [0, 255]. The applications'
`preprocess_input`, the trainer's input pipeline, the keras-hub image converter, the exports
and the attention analysis all take it from here, so that a mode means the same numbers
everywhere. Every mode is a channel order and a per-channel affine map, which is also how
keras-hub's `ImageConverter` (x · scale + offset) states it (`scale_offset`).
"""

import sys

import numpy as np

# RGB mean and std of ImageNet on [0, 1] (timm, torchvision).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# BGR means subtracted by the Caffe-style modes: Keras' "caffe" mode, and the SENet release,
# whose prototxts state `mean_value: 104, 117, 123`.
BGR_MEANS = {"caffe": (103.939, 116.779, 123.68), "senet": (104.0, 117.0, 123.0)}
MODES = ("torch", "caffe", "senet", "tf")
MODE_DESCRIPTIONS = {
    "torch": "RGB scaled to [0, 1], minus ImageNet mean, over std (timm, torchvision)",
    "caffe": "BGR minus the ImageNet BGR mean (Keras' caffe mode; official SKNet release)",
    "senet": "BGR minus (104, 117, 123) (the official SENet release)",
    "tf": "scaled to [-1, 1]",
}


def check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of "
                         f"{', '.join(MODES)}")
    return mode


def scale_offset(mode):
    """(scale, offset, channel order): the mode is `x · scale + offset` on RGB in [0, 255],
    then the channels in that order ("rgb" or "bgr"); scale / offset per channel (in RGB
    order) or one number."""
    check_mode(mode)
    if mode == "torch":
        return ([1 / (255 * s) for s in IMAGENET_STD],
                [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], "rgb")
    if mode == "tf":
        return 1 / 127.5, -1.0, "rgb"
    return 1.0, [-m for m in reversed(BGR_MEANS[mode])], "bgr"  # flip(RGB − RGB mean)


def _is_tf(x):
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.Tensor)


def normalize(x, mode="torch", data_format="channels_last"):
    """RGB images in [0, 255] (NumPy, a TensorFlow tensor in tf.data, or a Keras backend
    tensor; channels last or first) → the network's input under `mode`, in float32."""
    scale, offset, order = scale_offset(mode)
    channels_last = data_format in (None, "channels_last")
    axis = -1 if channels_last else (-3 if len(np.shape(x)) >= 3 else 0)
    shape = (3,) if channels_last else (3, 1, 1)
    scale, offset = (np.reshape(np.asarray(v, np.float32), shape if np.ndim(v) else ())
                     for v in (scale, offset))
    if isinstance(x, np.ndarray):
        x = x.astype(np.float32, copy=False) * scale + offset
        return np.flip(x, axis) if order == "bgr" else x
    if _is_tf(x):  # in a tf.data pipeline, whatever the Keras backend
        tf = sys.modules["tensorflow"]
        x = tf.cast(x, tf.float32) * scale + offset
        return tf.reverse(x, axis=[axis]) if order == "bgr" else x
    import keras

    x = keras.ops.cast(x, "float32") * scale + offset
    return keras.ops.flip(x, axis=axis) if order == "bgr" else x
