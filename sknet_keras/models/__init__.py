"""Model families. A family is a config dataclass (with a `family` name) and a builder
`backbone(inputs, config) -> feature map`; each family lists its named networks in
`ENTRIES`, which `sknet_keras.registry` collects. `network.build_network` assembles any
family's backbone with the classification head."""

from sknet_keras.models import bn_inception, resnet, shufflenet

FAMILIES = {"resnet": resnet, "bn_inception": bn_inception,
            "shufflenet_v2": shufflenet}
# Each family's config dataclass, for configs stored by value (weights files, presets).
CONFIG_CLASSES = {"resnet": resnet.ResNetConfig, "bn_inception": bn_inception.BNInceptionConfig,
                  "shufflenet_v2": shufflenet.ShuffleNetV2Config}
