"""Model families. Each family module defines a config dataclass (with a `family` name), a
builder `backbone(inputs, config) -> feature map`, its named networks (`ENTRIES`) and one
`Family` record (`models.entry`) that ties them together; `FAMILIES` lists the records,
which `sknet_keras.registry` collects. `network.build_network` assembles any family's
backbone with the classification head."""

from sknet_keras.models import bn_inception, resnest, resnet, shufflenet

FAMILIES = {family.name: family for family in (resnet.FAMILY, bn_inception.FAMILY,
                                                 shufflenet.FAMILY, resnest.FAMILY)}
# Each family's config dataclass, for configs stored by value (weights files, presets).
CONFIG_CLASSES = {name: family.config_class for name, family in FAMILIES.items()}
