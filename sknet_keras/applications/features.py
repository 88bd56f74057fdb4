"""Pyramid features, as timm's `features_only`: a model whose outputs are the stage outputs
of a network at strides 4, 8, 16, 32 — the input of a detector's or segmenter's neck."""

import keras

from sknet_keras.applications.builder import build_model
from sknet_keras.registry import family, get_model_config


def pyramid_taps(model):
    """{level: layer name} of a registry model (name or config): its stage outputs, at
    stride 2**level of the input."""
    config = get_model_config(model)
    return family(config).pyramid_taps(config)


def _config_of(model):
    try:
        return get_model_config(model.name)
    except ValueError:
        raise ValueError(
            f"feature_model needs a registry model: {model.name!r} is not a registry name "
            "(pass config=its registry name or config)"
        ) from None


def feature_model(model="sknet50", levels=(2, 3, 4, 5), config=None, **kwargs):
    """A `keras.Model` from images to {"P<level>": feature map at stride 2**level}.

    Args:
        model: a registry name or config (built here, without the top, with `kwargs` as
            `build_model`'s: `weights`, `input_shape`, ...), or a model of this package
            (its layers and weights are shared, not copied).
        levels: the pyramid levels, e.g. (2, 3, 4, 5) for strides 4-32 (keras-hub's P2-P5).
        config: the registry name or config of a built model whose name is not its own.
    """
    if isinstance(model, keras.Model):
        if kwargs:
            raise ValueError(f"build arguments {sorted(kwargs)} apply to a model name, "
                             "not to a built model")
        config = get_model_config(config) if config is not None else _config_of(model)
    else:
        config = get_model_config(model)
        model = build_model(config, include_top=False, **{"weights": None, **kwargs})
    taps = pyramid_taps(config)
    levels = tuple(levels)
    unknown = [level for level in levels if level not in taps]
    if not levels or unknown:
        raise ValueError(f"{config.name} has pyramid levels {sorted(taps)} (stride 2**level); "
                         f"got levels={levels}")
    outputs = {f"P{level}": model.get_layer(taps[level]).output for level in levels}
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # a tensor in, as built
    return keras.Model(inputs, outputs, name=f"{model.name}_features")
