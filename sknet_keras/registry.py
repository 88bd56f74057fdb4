"""Every named network: registry name → family and configuration.

Each family module (`sknet_keras.models.*`) lists its networks in `ENTRIES`; this module
collects them, so adding a variant (an ablation, a new depth) is a new entry, not new code.
Builders, trainer, converters, benchmark and analysis look models up here. Weights metadata
lives apart, in `sknet_keras.presets`.
"""

import difflib

from sknet_keras.models import FAMILIES
from sknet_keras.models.entry import Entry, Paper
from sknet_keras.models.resnet import ResNetConfig, SKConfig, Unit, units


def _collect():
    entries = {}
    for family in FAMILIES.values():
        for entry in family.entries:
            if entry.name in entries:
                raise ValueError(f"registry name {entry.name!r} is defined twice")
            entries[entry.name] = entry
    return entries


ENTRIES = _collect()
MODELS = {name: entry.config for name, entry in ENTRIES.items()}


def _norm(name):
    return str(name).lower().replace("-", "").replace("_", "")


def get_entry(name) -> Entry:
    """Registry lookup by name (case-insensitive, '-'/'_' ignored)."""
    matches = [e for n, e in ENTRIES.items() if _norm(n) == _norm(name)]
    if not matches:
        close = difflib.get_close_matches(str(name).lower(), sorted(ENTRIES), n=3, cutoff=0.75)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Known models: "
                         f"{', '.join(sorted(ENTRIES))}")
    return matches[0]


def get_model_config(name):
    """A registry model's configuration; configuration objects pass through."""
    if hasattr(name, "family"):
        return name
    return get_entry(name).config


def family(config):
    """The `Family` record of `config` (a registry name or a config)."""
    config = get_model_config(config)
    if config.family not in FAMILIES:
        raise ValueError(f"unknown model family {config.family!r}")
    return FAMILIES[config.family]


def list_models():
    return sorted(ENTRIES)


__all__ = ["ENTRIES", "MODELS", "Entry", "Paper", "ResNetConfig", "SKConfig",
           "Unit", "units", "get_entry", "get_model_config", "family", "list_models"]
