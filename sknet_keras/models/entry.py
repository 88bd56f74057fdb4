"""What a family and a registry entry are.

A `Family` is everything the package knows of one kind of network, in one record: its
config class, its backbone builder, its named networks, its pyramid taps and, per release
source, the converter function that maps that source's weights (named by "module:function",
so that models import nothing of the converters above them). Registry, weights files,
keras-hub classes and converters all read the record: adding a family is its module and its
record in `models.FAMILIES`, with no `if family == ...` anywhere: the applications, the
keras-hub classes and timm loading, the converters and the tables find it there.

An `Entry` is a named network: a family's config + what the papers say of it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Paper:
    """Figures a paper reports for a network (documentation only: tests never check the
    models against these, but against independent counts)."""

    top1_error: Optional[float] = None  # ImageNet top-1 error % (224 crop), or CIFAR-10 error
    params_m: Optional[float] = None
    gflops: Optional[float] = None  # multiply-adds, G (or M for the small networks)
    source: str = ""


@dataclasses.dataclass(frozen=True)
class Entry:
    config: object  # a family's config dataclass; `config.name` is the registry name
    description: str = ""
    paper: Optional[Paper] = None
    classes: int = 1000  # the classifier its figures are quoted for (CIFAR networks: 10)

    @property
    def name(self):
        return self.config.name


@dataclasses.dataclass(frozen=True)
class Family:
    name: str  # what its configs' `family` field says
    config_class: type
    backbone: Callable  # (inputs, config) -> last feature map
    pyramid_taps: Callable  # config -> {level: layer name}
    entries: Tuple[Entry, ...]
    converters: Mapping[str, str] = dataclasses.field(default_factory=dict)  # source -> "module:fn"
    # timm's architecture names (its entry points, what a timm repository's config.json
    # names) of this family's networks: a registry name, or (registry name, config changes).
    timm_architectures: Mapping[str, object] = dataclasses.field(default_factory=dict)
    hub_name: str = ""  # prefix of its keras-hub classes: f"{hub_name}Backbone", ...
    citation: str = ""  # BibTeX of the family's paper, for model cards

