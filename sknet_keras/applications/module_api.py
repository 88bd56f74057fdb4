"""What every family module of `sknet_keras.applications` exposes, as in `keras.applications`:
named builders whose `weights` default is "imagenet" where public weights exist (None
elsewhere), and `preprocess_input` / `decode_predictions` with the family's own default
mode, so that `module.preprocess_input(x)` prepares images as that family's weights expect.
"""

from sknet_keras import presets
from sknet_keras.applications import imagenet_utils
from sknet_keras.applications.builder import build_model
from sknet_keras.normalization import MODE_DESCRIPTIONS


# Every named builder, by public name, in the order the family modules define them: the
# package's `__init__` exports these, so a new family module needs no edit there.
BUILDERS = {}


def named_builder(registry_name, public_name):
    """A builder with `keras.applications.ResNet50`'s signature for one registry model."""
    if public_name in BUILDERS:
        raise ValueError(f"two application builders are named {public_name}")
    default_weights = "imagenet" if presets.get_preset(registry_name) is not None else None

    def builder(
        include_top=True,
        weights=default_weights,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=registry_name,
    ):
        return build_model(
            registry_name,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name,
        )

    builder.__name__ = builder.__qualname__ = public_name
    weights_note = (f"`weights` defaults to 'imagenet' ({presets.get_preset(registry_name).top1}"
                    f" % top-1)" if default_weights else
                    "No public ImageNet weights: `weights` defaults to None")
    builder.__doc__ = (
        f"Instantiate {public_name} (registry entry {registry_name!r}).\n\n"
        f"Arguments as `keras.applications.ResNet50`; see `build_model`. {weights_note}.\n")
    builder.default_weights = default_weights
    BUILDERS[public_name] = builder
    return builder


def preprocessing_functions(mode):
    """(preprocess_input, decode_predictions) with `mode` as the default."""

    def preprocess_input(x, data_format=None):
        return imagenet_utils.preprocess_input(x, data_format=data_format, mode=mode)

    preprocess_input.__doc__ = (
        f"RGB images in [0, 255] → this family's network input (mode {mode!r}: "
        f"{MODE_DESCRIPTIONS[mode]}).")
    return preprocess_input, imagenet_utils.decode_predictions
