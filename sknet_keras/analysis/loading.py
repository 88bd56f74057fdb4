"""The model to analyse and how its inputs must look, from `--model` / `--weights` as every
command reads them (`sknet_keras.trainers.model_source`: ImageNet weights, a release, a
weights file, or a trainer run, whose config.json says how it was trained).

The model is built without its classifier (the attention does not need it) at the analysis
resolution; what comes back is the model and the preprocessing its weights expect.
"""

import dataclasses

from sknet_keras.analysis.attention import sk_units
from sknet_keras.applications import build_model
from sknet_keras.registry import get_model_config
from sknet_keras.trainers.model_source import resolve


@dataclasses.dataclass
class Preprocessing:
    """How images are prepared for the weights: as the trainer's evaluation does."""

    image_size: int
    crop_fraction: float
    interpolation: str
    normalization: str


def _build(source, size):
    """The model without classifier at `size`; it must have SK units."""
    config = get_model_config(source.model)
    if size < config.min_size:
        raise ValueError(f"--image_size must be >= {config.min_size} for {config.name}; "
                         f"got {size}")
    # Checked on the network alone: weights are not fetched for a network with nothing to
    # analyse.
    if not sk_units(build_model(config, include_top=False, input_shape=(size, size, 3))):
        raise ValueError(f"--model={config.name} has no SK units (SelectiveKernel layers "
                         "exposing their attention): nothing to analyse")
    return source.build(include_top=False, input_shape=(size, size, 3)), size


def from_source(source, image_size=None):
    """(model without classifier, Preprocessing) of a `ModelSource`."""
    model, size = _build(source, image_size or source.image_size)
    return model, Preprocessing(size, source.crop_fraction, source.interpolation,
                                source.normalization)


def from_weights(name, weights, image_size=None):
    """(model, Preprocessing) of registry model `name` with `weights` ('imagenet',
    'architecture.tag' or a weights file), preprocessed as those weights were published
    (a run's weights file: as the run)."""
    return from_source(resolve(name, weights, image_size), image_size)


def from_run(model_dir, name=None, image_size=None):
    """(model, Preprocessing, what was loaded) of a trainer run, built and preprocessed as
    the run was (its config.json): its final weights, or its newest checkpoint before it
    has finished."""
    return load(name, model_dir, image_size)


def load(name, weights, image_size=None):
    """(model, Preprocessing, what was loaded) for the command line: `--weights` as every
    command reads it (`sknet_keras.trainers.model_source`); `name` defaults to the run's,
    the file's or sknet50."""
    source = resolve(name, weights, image_size)
    return (*from_source(source, image_size), source.describe())
