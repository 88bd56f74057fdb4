"""keras-hub classes over this package's networks: one `FeaturePyramidBackbone` per family,
with its `ImageConverter`, `ImageClassifierPreprocessor` and `ImageClassifier`.

A backbone is the family's own graph (the layers and names of `build_model(...,
include_top=False)`), so weights move between the two by layer name. Its constructor takes
the whole architecture by value (`architecture`: a registry name or the family config's
fields) and `get_config` gives every field back, so a preset needs no registry to load.
`pyramid_outputs` are the family's stage taps (`applications.pyramid_taps`) at strides 4-32.

Import this module (or `sknet_keras.hub`) before `keras_hub.models.*.from_preset(DIR)`:
importing registers the classes with Keras' serialization.
"""

import contextlib

import keras

from sknet_keras.extras import require
from sknet_keras.models import CONFIG_CLASSES, FAMILIES
from sknet_keras.models.serialization import config_from_dict, config_to_dict
from sknet_keras.registry import get_model_config
from sknet_keras.normalization import scale_offset

keras_hub = require("keras_hub", "sknet_keras.hub")

PACKAGE = "sknet_keras"
LEVELS = (2, 3, 4, 5)


# (scale, offset, channel_order) for which `ImageConverter`'s x * scale + offset on RGB
# images in [0, 255], then the channel order, is `preprocess_input(x, mode=mode)`.
converter_normalization = scale_offset


@contextlib.contextmanager
def _dtype_policy(dtype):
    """Builds the family's layers (which take no dtype argument) under `dtype`."""
    if dtype is None or isinstance(dtype, keras.dtype_policies.DTypePolicyMap):
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class _Backbone(keras_hub.models.FeaturePyramidBackbone):
    """A family's network up to its last feature map, with P2-P5 pyramid outputs.

    Args:
        architecture: a registry name (`sknet_keras.registry.list_models()`) or a dict of
            the family config's fields (what `get_config()["architecture"]` holds).
        image_shape: (height, width, 3); None sizes take any image.
        dtype: a Keras dtype policy for every layer.
    """

    family = None  # set by each family's subclass

    def __init__(self, architecture, image_shape=(None, None, 3), dtype=None, **kwargs):
        config = self._config(architecture)
        family = FAMILIES[config.family]
        with _dtype_policy(dtype):
            images = keras.Input(shape=tuple(image_shape), name="images")
            features = family.backbone(images, config)
        taps = family.pyramid_taps(config)
        kwargs.setdefault("name", config.name)
        super().__init__(inputs=images, outputs=features, dtype=dtype, **kwargs)
        self.pyramid_outputs = {f"P{level}": self.get_layer(taps[level]).output
                                for level in LEVELS if level in taps}
        self.architecture = config
        self.image_shape = tuple(image_shape)

    @classmethod
    def _config(cls, architecture):
        config_class = CONFIG_CLASSES[cls.family]
        if isinstance(architecture, str):
            config = get_model_config(architecture)
        elif isinstance(architecture, dict):
            config = config_from_dict(config_class, architecture)
        else:
            config = architecture
        if not isinstance(config, config_class):
            raise ValueError(f"{cls.__name__} builds the {cls.family} family; "
                             f"{getattr(config, 'name', config)!r} is of the "
                             f"{getattr(config, 'family', '?')} family (use "
                             "sknet_keras.hub.backbone(name), which picks the class)")
        return config

    def get_config(self):
        config = super().get_config()
        config.update({"architecture": config_to_dict(self.architecture),
                       "image_shape": list(self.image_shape)})
        return config


class _ImageConverter(keras_hub.layers.ImageConverter):
    """keras-hub's resize + x * scale + offset, then `channel_order` "bgr" reverses the
    channels: the Caffe releases' preprocessing (BGR minus the mean).

    `crop_fraction` (timm's `crop_pct`): before resizing, keep the centre of the image, that
    fraction of the largest centred region of `image_size`'s aspect ratio: timm's evaluation
    transform (resize to size / crop_pct, centre-crop size), which keras-hub's converter
    lacks."""

    def __init__(self, channel_order="rgb", crop_fraction=None, **kwargs):
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr'; got {channel_order!r}")
        if crop_fraction is not None and not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1]; got {crop_fraction!r}")
        super().__init__(**kwargs)
        self.channel_order = channel_order
        self.crop_fraction = crop_fraction

    def call(self, inputs):
        if self.crop_fraction is not None and self.image_size is not None \
                and not isinstance(inputs, dict):
            inputs = _center_crop(inputs, self.crop_fraction, self.image_size)
        outputs = super().call(inputs)
        if self.channel_order == "rgb":
            return outputs
        if isinstance(outputs, dict):
            return {**outputs, "images": _reverse_channels(outputs["images"])}
        return _reverse_channels(outputs)

    def get_config(self):
        config = {**super().get_config(), "channel_order": self.channel_order}
        if self.crop_fraction is not None:
            config["crop_fraction"] = self.crop_fraction
        return config


def _center_crop(images, fraction, image_size):
    """The centred `fraction` of the largest centred region of `image_size`'s aspect ratio
    (images ..., H, W, C; sizes read at run time in a tf.data pipeline)."""
    import tensorflow as tf

    target_h, target_w = image_size
    if isinstance(images, tf.Tensor):
        h, w = tf.shape(images)[-3], tf.shape(images)[-2]
        scale = tf.minimum(tf.cast(h, tf.float32) / target_h,
                           tf.cast(w, tf.float32) / target_w) * fraction
        crop_h = tf.maximum(tf.cast(tf.round(scale * target_h), tf.int32), 1)
        crop_w = tf.maximum(tf.cast(tf.round(scale * target_w), tf.int32), 1)
    else:
        images = keras.ops.convert_to_tensor(images)
        h, w = images.shape[-3], images.shape[-2]
        scale = min(h / target_h, w / target_w) * fraction
        crop_h, crop_w = max(round(scale * target_h), 1), max(round(scale * target_w), 1)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return images[..., top:top + crop_h, left:left + crop_w, :]


def _reverse_channels(x):
    import tensorflow as tf

    if isinstance(x, tf.Tensor):  # in a tf.data pipeline, whatever the Keras backend
        return tf.reverse(x, axis=[-1])
    return keras.ops.flip(x, axis=-1)


def _register(cls):
    cls.__module__ = __name__
    return keras.saving.register_keras_serializable(package=PACKAGE, name=cls.__name__)(cls)


def _family_classes(prefix, family):
    """The four keras-hub classes of one family; keras-hub pairs them through
    `backbone_cls` (which is how `ImageClassifier.from_preset` finds the right one)."""
    backbone = _register(type(f"{prefix}Backbone", (_Backbone,), {
        "family": family, "__doc__": _Backbone.__doc__}))
    converter = _register(type(f"{prefix}ImageConverter", (_ImageConverter,), {
        "backbone_cls": backbone, "__doc__": _ImageConverter.__doc__}))
    preprocessor = _register(type(
        f"{prefix}ImageClassifierPreprocessor",
        (keras_hub.models.ImageClassifierPreprocessor,),
        {"backbone_cls": backbone, "image_converter_cls": converter,
         "__doc__": f"Image classification preprocessing of {prefix}Backbone."}))
    classifier = _register(type(
        f"{prefix}ImageClassifier", (keras_hub.models.ImageClassifier,),
        {"backbone_cls": backbone, "preprocessor_cls": preprocessor,
         "__doc__": f"{prefix}Backbone + global pooling + dense classifier."}))
    return backbone, converter, preprocessor, classifier


# The four classes of every family, named by its record's `hub_name` (SKNetBackbone,
# ResNeStImageClassifier, ...), as attributes of this module.
BACKBONES, CLASSIFIERS, CLASSES = {}, {}, {}
for _name, _record in FAMILIES.items():
    for _cls in _family_classes(_record.hub_name, _name):
        CLASSES[_cls.__name__] = _cls
    BACKBONES[_name] = CLASSES[f"{_record.hub_name}Backbone"]
    CLASSIFIERS[_name] = CLASSES[f"{_record.hub_name}ImageClassifier"]
globals().update(CLASSES)
