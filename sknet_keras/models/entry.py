"""A registry entry: a named network = a family's config + what the papers say of it."""

from __future__ import annotations

import dataclasses
from typing import Optional


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
