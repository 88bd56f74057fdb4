"""`preprocess_input` and `decode_predictions`, as in keras.applications (no download)."""

import functools
import json
from importlib import resources

import keras
import numpy as np
from keras.applications import imagenet_utils as _keras_imagenet_utils

from sknet_keras import presets
from sknet_keras.registry import get_model_config


# BGR means subtracted by the Caffe-style modes: Keras' "caffe" mode, and the SENet release,
# whose prototxts state `mean_value: 104, 117, 123`.
BGR_MEANS = {"caffe": (103.939, 116.779, 123.68), "senet": (104.0, 117.0, 123.0)}
MODES = ("torch", "caffe", "tf", "senet")
MODE_DESCRIPTIONS = {
    "torch": "RGB scaled to [0, 1], minus ImageNet mean, over std (timm, torchvision)",
    "caffe": "BGR minus the ImageNet BGR mean (Keras' caffe mode; official SKNet release)",
    "senet": "BGR minus (104, 117, 123) (the official SENet release)",
    "tf": "scaled to [-1, 1]",
}


def preprocess_input(x, data_format=None, mode="torch"):
    """RGB images in [0, 255] → the network's input.

    mode "torch" (default): ImageNet mean/std, the convention of the timm releases; "caffe":
    RGB→BGR and mean subtraction, the official SKNet Caffe release (Keras' caffe mode);
    "senet": RGB→BGR minus (104, 117, 123), the official SENet release; "tf": [-1, 1].
    `preprocessing_mode(model)` tells which one a model's `weights="imagenet"` expects.
    """
    if mode not in MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {MODES}")
    if mode != "senet":
        return _keras_imagenet_utils.preprocess_input(x, data_format=data_format, mode=mode)
    data_format = data_format or keras.config.image_data_format()
    if data_format == "channels_first":
        axis_shape = (3, 1, 1) if len(x.shape) == 3 else (1, 3, 1, 1)
        bgr = x[::-1, ...] if len(x.shape) == 3 else x[:, ::-1, ...]
    else:
        axis_shape, bgr = (3,), x[..., ::-1]
    mean = np.reshape(np.asarray(BGR_MEANS["senet"], "float32"), axis_shape)
    if isinstance(x, np.ndarray):
        return bgr.astype(keras.backend.floatx(), copy=False) - mean
    return keras.ops.cast(bgr, keras.backend.floatx()) - mean


def preprocessing_mode(model):
    """`preprocess_input` mode matching a registry model's ImageNet weights."""
    return presets.preprocessing_mode(get_model_config(model).name)


@functools.lru_cache(maxsize=1)
def imagenet_class_index():
    """{class id (int): (WordNet id, name)} for the 1000 ImageNet-1k classes."""
    text = resources.files("sknet_keras.applications").joinpath(
        "imagenet_class_index.json"
    ).read_text()
    return {int(k): tuple(v) for k, v in json.loads(text).items()}


def decode_predictions(preds, top=5):
    """Top-`top` (WordNet id, class name, score) tuples per sample of a (N, 1000) prediction."""
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions (i.e. a 2D array of shape "
            f"(samples, 1000)). Received array with shape: {preds.shape}"
        )
    index = imagenet_class_index()
    results = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        results.append([index[int(i)] + (float(row[i]),) for i in best])
    return results
