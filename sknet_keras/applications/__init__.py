"""keras.applications-style builders for every model in `sknet_keras.registry`.

    from sknet_keras.applications import SKNet50
    model = SKNet50(include_top=False, input_shape=(224, 224, 3), pooling="avg")
"""

from sknet_keras.applications.builder import build_model
from sknet_keras.applications.imagenet_utils import (
    decode_predictions,
    preprocess_input,
    preprocessing_mode,
)


def _named_builder(registry_name, public_name):
    def builder(
        include_top=True,
        weights=None,
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
    builder.__doc__ = (
        f"Instantiate {public_name} (registry entry {registry_name!r}).\n\n"
        f"Arguments as `keras.applications.ResNet50`; see `build_model`.\n"
    )
    return builder


SKNet26 = _named_builder("sknet26", "SKNet26")
SKNet50 = _named_builder("sknet50", "SKNet50")
SKNet101 = _named_builder("sknet101", "SKNet101")
ResNeXt50 = _named_builder("resnext50", "ResNeXt50")
ResNeXt101 = _named_builder("resnext101", "ResNeXt101")
SEResNeXt50 = _named_builder("seresnext50", "SEResNeXt50")
SEResNeXt101 = _named_builder("seresnext101", "SEResNeXt101")
SEResNet50 = _named_builder("seresnet50", "SEResNet50")
SEResNet101 = _named_builder("seresnet101", "SEResNet101")
SEResNet152 = _named_builder("seresnet152", "SEResNet152")
SENet154 = _named_builder("senet154", "SENet154")
SKResNet18 = _named_builder("skresnet18", "SKResNet18")
SKResNet34 = _named_builder("skresnet34", "SKResNet34")

__all__ = [
    "build_model",
    "decode_predictions",
    "preprocess_input",
    "preprocessing_mode",
    "SKNet26",
    "SKNet50",
    "SKNet101",
    "ResNeXt50",
    "ResNeXt101",
    "SEResNeXt50",
    "SEResNeXt101",
    "SEResNet50",
    "SEResNet101",
    "SEResNet152",
    "SENet154",
    "SKResNet18",
    "SKResNet34",
]
