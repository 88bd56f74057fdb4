"""The model to analyse and how its inputs must look: from ImageNet weights, a weights
file, or a trainer run (`--model_dir`, whose config.json says how it was trained).

The model is built without its classifier (the attention does not need it) at the analysis
resolution; what comes back is the model and the preprocessing its weights expect.
"""

import dataclasses
import os

import keras

from sknet_keras.analysis.attention import sk_units
from sknet_keras.applications import build_model, preprocessing_mode
from sknet_keras.presets import evaluation_defaults
from sknet_keras.registry import get_model_config


@dataclasses.dataclass
class Preprocessing:
    """How images are prepared for the weights: as the trainer's evaluation does."""

    image_size: int
    crop_fraction: float
    interpolation: str
    normalization: str


def _build(name, image_size):
    """The model without classifier at `image_size`; it must have SK units."""
    config = get_model_config(name)
    size = image_size or config.default_size
    if size < config.min_size:
        raise ValueError(f"--image_size must be >= {config.min_size} for {config.name}; "
                         f"got {size}")
    model = build_model(config, include_top=False, input_shape=(size, size, 3))
    if not sk_units(model):
        raise ValueError(f"--model={config.name} has no SK units (SelectiveKernel layers "
                         "exposing their attention): nothing to analyse")
    return model, size


def from_weights(name, weights, image_size=None):
    """(model, Preprocessing) of registry model `name` with `weights` ('imagenet' or a
    weights file), preprocessed like those weights were published."""
    model, size = _build(name, image_size)
    config = get_model_config(name)
    if weights == "imagenet":
        from sknet_keras.applications.pretrained import load_imagenet_weights

        load_imagenet_weights(model, config.name)
        crop, interpolation = evaluation_defaults(config.name)
    else:
        from sknet_keras.weights.files import load_weights

        load_weights(model, weights)
        crop, interpolation = evaluation_defaults(None)
    return model, Preprocessing(size, crop, interpolation, preprocessing_mode(config.name))


def from_run(model_dir, name=None, image_size=None):
    """(model, Preprocessing, checkpoint path) of a trainer run's latest checkpoint, built
    and preprocessed as the run was (its config.json)."""
    import tensorflow as tf

    from sknet_keras.trainers.configs import read_config
    from sknet_keras.trainers.checkpoints import latest_checkpoint, restore_newest

    run = read_config(model_dir)
    if run is None:
        raise ValueError(f"--weights: {model_dir} is a folder without config.json (not a "
                         "trainer --model_dir)")
    if name and get_model_config(name).name != run.model.name:
        raise ValueError(f"--model={name}, but {model_dir} holds a {run.model.name} run")
    checkpoint = latest_checkpoint(model_dir)
    if not checkpoint:
        raise ValueError(f"--weights: no checkpoint in {model_dir}/checkpoints")
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"--weights={model_dir}: a run's checkpoint is read with "
                         "TensorFlow; use KERAS_BACKEND=tensorflow, or the run's "
                         "final.weights.h5 file")
    model, size = _build(run.model.name, image_size or run.data.image_size)
    checkpoint = restore_newest(tf.train.Checkpoint(model=model), model_dir)
    d = run.data
    prep = Preprocessing(size, d.crop_fraction, d.eval_interpolation,
                         d.normalization or preprocessing_mode(run.model.name))
    return model, prep, checkpoint


def load(name, weights, image_size=None):
    """(model, Preprocessing, what was loaded) for the command line: `weights` a trainer
    run's folder, 'imagenet' or a weights file; `name` defaults to the run's or sknet50."""
    if weights and os.path.isdir(weights):
        return from_run(weights, name, image_size)
    if weights != "imagenet" and not os.path.isfile(weights or ""):
        raise ValueError(f"--weights: {weights!r} is neither 'imagenet', a weights file nor "
                         "a trainer --model_dir")
    model, prep = from_weights(name or "sknet50", weights, image_size)
    return model, prep, weights
