"""`build_model`: any registry model with the `keras.applications` signature and behaviour.

Argument rules, error messages and the head follow `keras.applications.resnet`; the
network itself comes from its family (`sknet_keras.models`), the weights from
`sknet_keras.weights`.
"""

import difflib
import os

import keras
from keras import layers

from sknet_keras import presets
from sknet_keras.models.network import POOLINGS, build_network
from sknet_keras.registry import get_model_config
from sknet_keras.weights.files import load_weights, not_a_weights_file
from sknet_keras.applications.pretrained import load_imagenet_weights


def _input_shape(input_shape, config, include_top, weights):
    """keras.applications' input-shape rules (channels_last)."""
    if input_shape is None:
        return (config.default_size, config.default_size, 3) if include_top else (None, None, 3)
    try:
        input_shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"`input_shape` must be a tuple of three integers; got input_shape={input_shape!r}"
        ) from None
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be a tuple of three integers (height, width, channels); "
            f"got input_shape={input_shape}"
        )
    h, w, c = input_shape
    if c is None or c < 1:
        raise ValueError(f"the channel count must be a positive integer; got input_shape={input_shape}")
    if weights is not None and c != 3:
        raise ValueError(
            f"pretrained weights need 3 input channels; got input_shape={input_shape}"
        )
    if any(d is not None and d < config.min_size for d in (h, w)):
        channels_first = h is not None and h <= 4 and (c or 0) >= config.min_size
        raise ValueError(
            f"Input size must be at least {config.min_size}x{config.min_size}; "
            f"got input_shape={input_shape}"
            + (" (channels come last: (height, width, channels))" if channels_first else "")
        )
    if include_top and (h is None or w is None):
        raise ValueError(
            "If `include_top` is True, you should specify a static `input_shape`. "
            f"Received: input_shape={input_shape}"
        )
    return input_shape


def release_of(weights, config):
    """The `presets.PRESETS` key that `weights` names for `config`: "imagenet" (the
    architecture's default release) or "architecture.tag" (that release; an existing file of
    that name is a file); None for anything else."""
    if weights == "imagenet":
        return presets.preset_key(config.name)
    if not isinstance(weights, str) or os.path.exists(weights):
        return None
    arch, dot, tag = weights.partition(".")
    if weights in presets.PRESETS:
        if arch != config.name:
            raise ValueError(f"weights={weights!r} are a release of {arch}, not of "
                             f"{config.name}: build {arch}, or give one of {config.name}'s")
        return weights
    if dot and arch == config.name and "/" not in tag and not tag.endswith((".h5", ".keras")):
        releases = [k for k in presets.PRESETS if k.partition(".")[0] == config.name]
        close = difflib.get_close_matches(weights, releases, n=1)
        raise ValueError(f"weights={weights!r}: no release of {config.name} has that tag "
                         f"(and no such file); its releases: {', '.join(releases) or 'none'}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
    return None


def _check_weights(weights, config, include_top, classes, classifier_activation):
    if not (weights in (None, "imagenet") or isinstance(weights, (str, os.PathLike))):
        raise ValueError(
            "The `weights` argument should be either `None` (random initialization), "
            f"'imagenet', 'architecture.tag', or the path to a weights file; got "
            f"weights={weights!r}")
    if weights == "imagenet" or release_of(weights, config):
        if presets.get_preset(config.name) is None:
            raise ValueError(
                f"no public ImageNet weights exist for {config.name!r} (use weights=None); "
                f"models with weights: {', '.join(presets.models_with_weights())}")
        if include_top and classes != 1000:
            raise ValueError(
                "If using `weights='imagenet'` with `include_top=True`, `classes` should be "
                f"1000; got classes={classes}")
        if include_top and classifier_activation not in (None, "softmax"):
            raise ValueError(
                "Only `None` and `softmax` activations are allowed for the "
                "`classifier_activation` argument when using pretrained weights, with "
                f"`include_top=True`; Received: classifier_activation={classifier_activation}")
    elif weights is not None:
        if not os.path.isfile(weights):
            raise ValueError(not_a_weights_file(weights))
        if include_top and classifier_activation not in (None, "softmax"):  # as Keras
            raise ValueError(
                "Only `None` and `softmax` activations are allowed for the "
                "`classifier_activation` argument when using pretrained weights, with "
                f"`include_top=True`; Received: classifier_activation={classifier_activation}")


def build_model(
    model="sknet50",
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
):
    """Build a registry model with the `keras.applications` signature and behaviour.

    Args:
        model: registry name (`sknet_keras.registry.list_models()`) or a model config.
        include_top: add the global-average-pool + dense classifier.
        weights: None (random init), "imagenet" (the default release), "architecture.tag"
            (a release of `presets.PRESETS`, e.g. "resnext50.a1h_in1k"), or the path of a
            weights file.
        input_tensor: optional tensor (e.g. output of `keras.Input` or other layers).
        input_shape: (H, W, C); H and W may be None when include_top is False.
        pooling: "avg", "max" or None for the feature output when include_top is False.
        classes: classifier size (include_top only).
        classifier_activation: activation of the classifier (None for logits).
        name: model name (default: the registry name).
    """
    config = get_model_config(model)
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "sknet_keras models support image_data_format 'channels_last' only; got "
            f"{keras.config.image_data_format()!r}")
    _check_weights(weights, config, include_top, classes, classifier_activation)
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of None, 'avg', 'max'; got pooling={pooling!r}")
    if include_top and (not isinstance(classes, int) or isinstance(classes, bool)
                        or classes < 1):
        raise ValueError(f"`classes` must be a positive integer; got classes={classes!r}")
    if include_top and classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError):
            raise ValueError(f"Unknown classifier_activation {classifier_activation!r}") from None

    input_shape = _input_shape(input_shape, config, include_top, weights)
    if input_tensor is None:
        img_input = layers.Input(shape=input_shape)
    elif not keras.backend.is_keras_tensor(input_tensor):
        img_input = layers.Input(tensor=input_tensor, shape=input_shape)
    else:
        img_input = input_tensor
    if img_input.shape[-1] is None or len(img_input.shape) != 4:
        raise ValueError(
            f"input_tensor must be a 4D (batch, height, width, channels) tensor with known "
            f"channels; got shape {tuple(img_input.shape)}")

    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else None
    model = build_network(config, img_input, include_top, pooling, classes,
                          classifier_activation, name=name or config.name,
                          model_inputs=inputs)
    release = release_of(weights, config)
    if release:
        load_imagenet_weights(model, config.name, release=release)
    elif weights is not None:
        load_weights(model, weights)
    return model
