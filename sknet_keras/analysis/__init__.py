"""The paper's attention analysis (SKNet §6, Figs. 2–4): does a neuron's receptive field
follow the size of the object?

- `attention`: read every SK unit's attention out of a model; the paper's statistics.
- `enlarge`: the paper's object enlargement (centre crop to 1/s, resize back) and the
  evaluation preprocessing around it.
- `sources`: images from a folder or a trainer dataset.
- `measure`: run images at several scales through a model: per image, per unit, per scale,
  the mean attention of each branch; per-class and overall averages (`AttentionResult`).
- `loading`: the model from ImageNet weights, a weights file or a trainer run.
- `report`: summary.json / .csv / attention.npz; `figures`: the plots (needs matplotlib).
- `miniature`: an offline reproduction on synthetic objects of controlled size.
- `python -m sknet_keras.analysis`: the command line (docs/analysis.md).

Names are imported lazily, so that `python -m sknet_keras.analysis` can quiet TensorFlow's
start-up (`sknet_keras.cli`) before anything imports it.
"""

import importlib

_EXPORTS = {
    "attention_model": "attention", "branch_label": "attention", "branch_means": "attention",
    "default_branches": "attention", "mean_attention_difference": "attention",
    "paper_unit_name": "attention", "receptive_field": "attention", "sk_units": "attention",
    "AttentionResult": "measure", "collect": "measure", "image_folder": "sources",
    "dataset": "sources", "from_weights": "loading", "from_run": "loading",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
