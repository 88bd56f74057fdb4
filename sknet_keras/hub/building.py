"""keras-hub backbones and classifiers of registry models, with this package's weights."""

from sknet_keras.applications import build_model, preprocessing_mode
from sknet_keras.hub.models import BACKBONES, CLASSIFIERS, converter_normalization
from sknet_keras.registry import get_model_config


def copy_weights(source, target):
    """Every weight of `target`'s layers from `source`'s layer of the same name (the
    backbone and `build_model` share the family's layer names)."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def backbone(model="sknet50", weights=None, image_shape=(None, None, 3), dtype=None):
    """The family's `FeaturePyramidBackbone` of a registry model (name or config), with
    `weights` None, "imagenet" or a weights file of this package."""
    config = get_model_config(model)
    result = BACKBONES[config.family](architecture=config, image_shape=image_shape,
                                      dtype=dtype)
    if weights is not None:
        source = build_model(config, include_top=False, weights=weights,
                             input_shape=tuple(image_shape))
        copy_weights(source, result)
    return result


def image_classifier(model="sknet50", weights=None, classes=1000, image_size=None,
                     normalization=None, network=None):
    """The family's `ImageClassifier` (backbone, global average pool, dropout, dense
    logits) with a preprocessor that resizes RGB images in [0, 255] to `image_size` and
    applies `normalization` (default: the weights' `preprocess_input` mode).

    `network`: a built `build_model` network of `model` whose weights to take (else
    `weights` are loaded into a new one)."""
    config = get_model_config(model)
    image_size = image_size or config.default_size
    normalization = normalization or preprocessing_mode(config)
    family_backbone = BACKBONES[config.family](architecture=config)
    classifier_class = CLASSIFIERS[config.family]
    scale, offset, channel_order = converter_normalization(normalization)
    converter = classifier_class.preprocessor_cls.image_converter_cls(
        image_size=(image_size, image_size), scale=scale, offset=offset,
        channel_order=channel_order)
    classifier = classifier_class(
        backbone=family_backbone, num_classes=classes, dropout=config.dropout,
        preprocessor=classifier_class.preprocessor_cls(image_converter=converter))
    if network is None and weights is not None:
        network = build_model(config, weights=weights, classes=classes,
                              input_shape=(image_size, image_size, 3),
                              classifier_activation=None)
    if network is not None:
        copy_weights(network, family_backbone)
        classifier.output_dense.set_weights(network.get_layer("predictions").get_weights())
    return classifier
