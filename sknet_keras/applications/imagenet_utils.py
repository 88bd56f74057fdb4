"""`preprocess_input` and `decode_predictions`, as in keras.applications (no download)."""

import functools
import json
from importlib import resources

import keras
import numpy as np

from sknet_keras import presets
from sknet_keras.normalization import normalize
from sknet_keras.registry import get_model_config


def preprocess_input(x, data_format=None, mode="torch"):
    """RGB images in [0, 255] → the network's input (`sknet_keras.normalization`).

    mode "torch" (default): ImageNet mean/std, the convention of the timm releases; "caffe":
    RGB→BGR and mean subtraction, the official SKNet Caffe release (Keras' caffe mode);
    "senet": RGB→BGR minus (104, 117, 123), the official SENet release; "tf": [-1, 1].
    `preprocessing_mode(model)` tells which one a model's `weights="imagenet"` expects.
    """
    return normalize(x, mode, data_format or keras.config.image_data_format())


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
