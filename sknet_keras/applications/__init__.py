"""keras.applications-style builders for every named model, grouped by family.

    from sknet_keras.applications import SKNet50
    model = SKNet50(include_top=False, input_shape=(224, 224, 3), pooling="avg")

Like `keras.applications`, each family module (`sknet`, `sk_resnet`, `resnext`,
`se_resnext`, `se_resnet`, `senet154`, `se_bn_inception`, `shufflenet_v2`) exposes its
builders and a `preprocess_input` / `decode_predictions` whose default mode is the one its weights were trained with.
`build_model(name, ...)` builds any registry model, including the ablation variants;
`feature_model(name, levels=(2, 3, 4, 5))` gives its stage outputs at strides 4-32.
"""

import importlib
import pkgutil

from sknet_keras.applications.builder import build_model
from sknet_keras.applications.features import feature_model, pyramid_taps
from sknet_keras.applications.imagenet_utils import (decode_predictions, preprocess_input,
                                                     preprocessing_mode)
from sknet_keras.applications.module_api import BUILDERS

# Every module of this package: the family modules register their builders (`named_builder`)
# when imported, and each is an attribute (`sknet_keras.applications.sknet`), as in Keras.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
globals().update(BUILDERS)

__all__ = ["build_model", "feature_model", "pyramid_taps", "decode_predictions",
           "preprocess_input", "preprocessing_mode", *BUILDERS]
