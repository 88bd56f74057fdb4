"""A whole network from a family config: input → backbone → classification head."""

import keras
from keras import layers

from sknet_keras.models import FAMILIES

POOLINGS = (None, "avg", "max")


def build_network(config, inputs, include_top=True, pooling=None, classes=1000,
                  classifier_activation="softmax", name=None, model_inputs=None):
    """`keras.Model` from `model_inputs` (default `inputs`) through `config`'s backbone.

    The head is global average pooling (+ the config's dropout) + dense classifier; under a
    mixed-precision policy the classifier computes in float32 (Keras' advice for the last
    layer). Without the top, `pooling` "avg" / "max" pools the feature map.
    """
    if config.family not in FAMILIES:
        raise ValueError(f"unknown model family {config.family!r}")
    x = FAMILIES[config.family].backbone(inputs, config)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if getattr(config, "dropout", 0.0):
            x = layers.Dropout(config.dropout, name="top_dropout")(x)
        mixed = keras.config.dtype_policy().compute_dtype != "float32"
        x = layers.Dense(classes, activation=classifier_activation,
                         dtype="float32" if mixed else None, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs if model_inputs is None else model_inputs, x,
                       name=name or config.name)
