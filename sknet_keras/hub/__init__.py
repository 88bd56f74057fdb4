"""keras-hub models of every registry network (the optional `[hub]` extra).

    import keras_hub
    from sknet_keras import hub

    backbone = hub.backbone("sknet50", weights="imagenet")    # a FeaturePyramidBackbone
    backbone.pyramid_outputs                                  # {"P2": ..., "P5": ...}
    classifier = hub.image_classifier("sknet50", weights="imagenet")
    classifier.predict(images)          # RGB in [0, 255]: its preprocessor normalizes them
    classifier.save_to_preset("sknet50_preset")
    keras_hub.models.ImageClassifier.from_preset("sknet50_preset")

timm's checkpoints of these networks load through keras-hub itself once this package is
imported (`sknet_keras.hub.timm_presets`), from the Hugging Face Hub or a folder laid out as
a timm repository:

    classifier = keras_hub.models.ImageClassifier.from_preset("hf://timm/skresnext50_32x4d.ra_in1k")

`python -m sknet_keras.hub --model=NAME --weights=imagenet|FILE|RUN_DIR --output=DIR` writes
such a preset directory, checked by loading it back. Detectors and segmenters take the
backbone as their image encoder (`keras_hub.models.RetinaNetBackbone`,
`DeepLabV3Backbone`), as they take keras-hub's ResNet.
"""

import sys

# `python -m sknet_keras.hub` imports this package (and so keras-hub and TensorFlow) before
# its __main__ runs: only then is the commands' quiet start-up (sknet_keras.cli) taken here.
# A plain `import sknet_keras.hub` changes nothing but keras-hub's timm loader (above).
_argv = getattr(sys, "orig_argv", [])
if sys.argv[:1] == ["-m"] and "-m" in _argv[:-1] and \
        _argv[_argv.index("-m") + 1] == "sknet_keras.hub":
    import sknet_keras.cli  # noqa: F401

from sknet_keras.hub.models import (BACKBONES, CLASSES, CLASSIFIERS,  # noqa: E402
                                    converter_normalization)
from sknet_keras.hub.building import backbone, copy_weights, image_classifier  # noqa: E402
from sknet_keras.hub.model_card import upload_preset  # noqa: E402
from sknet_keras.hub.timm_presets import load_timm_preset  # noqa: E402
from sknet_keras.hub.timm_presets import install as _install_timm_loader  # noqa: E402

_install_timm_loader()

# Every family's Backbone, ImageConverter, ImageClassifierPreprocessor and ImageClassifier
# (SKNetBackbone, ShuffleNetV2ImageClassifier, SEBNInceptionBackbone, ResNeStBackbone, ...).
globals().update(CLASSES)

__all__ = [
    "backbone", "image_classifier", "copy_weights", "converter_normalization", "load_timm_preset",
    "upload_preset", "BACKBONES", "CLASSIFIERS", *CLASSES,
]
