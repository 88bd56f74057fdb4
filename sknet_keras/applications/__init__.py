"""keras.applications-style builders for every named model, grouped by family.

    from sknet_keras.applications import SKNet50
    model = SKNet50(include_top=False, input_shape=(224, 224, 3), pooling="avg")

Like `keras.applications`, each family module (`sknet`, `sk_resnet`, `resnext`,
`se_resnext`, `se_resnet`, `senet154`, `se_bn_inception`, `shufflenet_v2`) exposes its
builders and a `preprocess_input` / `decode_predictions` whose default mode is the one its weights were trained with.
`build_model(name, ...)` builds any registry model, including the ablation variants;
`feature_model(name, levels=(2, 3, 4, 5))` gives its stage outputs at strides 4-32.
"""

from sknet_keras.applications import (resnext, se_bn_inception, se_resnet,  # noqa: F401
                                      se_resnext, senet154, shufflenet_v2, sk_resnet, sknet)
from sknet_keras.applications.builder import build_model
from sknet_keras.applications.features import feature_model, pyramid_taps
from sknet_keras.applications.imagenet_utils import (decode_predictions, preprocess_input,
                                                     preprocessing_mode)
from sknet_keras.applications.resnext import ResNeXt50, ResNeXt101
from sknet_keras.applications.se_bn_inception import SEBNInception
from sknet_keras.applications.se_resnet import SEResNet50, SEResNet101, SEResNet152
from sknet_keras.applications.se_resnext import SEResNeXt50, SEResNeXt101
from sknet_keras.applications.senet154 import SENet154
from sknet_keras.applications.shufflenet_v2 import (ShuffleNetV2x05, ShuffleNetV2x05SE,
                                                    ShuffleNetV2x05SK, ShuffleNetV2x10,
                                                    ShuffleNetV2x10SE, ShuffleNetV2x10SK)
from sknet_keras.applications.sk_resnet import SKResNet18, SKResNet34
from sknet_keras.applications.sknet import SKNet26, SKNet50, SKNet101

__all__ = [
    "build_model",
    "feature_model",
    "pyramid_taps",
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
    "SEBNInception",
    "ShuffleNetV2x05",
    "ShuffleNetV2x10",
    "ShuffleNetV2x05SE",
    "ShuffleNetV2x10SE",
    "ShuffleNetV2x05SK",
    "ShuffleNetV2x10SK",
]
