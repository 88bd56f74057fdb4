"""Reading the SK attention out of a model, and the paper's statistics of it (SKNet §6).

Application models build their SK units with `return_attention=True`, so each unit's
attention a (N, M, C), float32, softmax over the M branches, is a tensor of the model's
graph: `attention_model` exposes them all without rebuilding or reloading anything.
Everything here is keras.ops / NumPy: it runs on any Keras backend.
"""

import re

import keras
import numpy as np

from sknet_keras.layers import SelectiveKernel
from sknet_keras.layers.nesting import nested_layers

# Layer name → the paper's unit name. ResNet family: conv{stage}_block{unit}_{i}_sk;
# ShuffleNetV2 + SK: stage{stage}_unit{unit}_..._sk. Unmatched names pass through.
UNIT_PATTERNS = (
    (re.compile(r"^conv(\d+)_block(\d+)_\d+_sk$"), "SK_{0}_{1}"),
    (re.compile(r"^stage(\d+)_unit(\d+)_.*sk$"), "SK_{0}_{1}"),
)
_PAPER_NAME = re.compile(r"^SK_(\d+)_(\d+)$")


def paper_unit_name(layer_name):
    """`conv3_block4_2_sk` → `SK_3_4` (the paper's naming); other names pass through."""
    for pattern, template in UNIT_PATTERNS:
        match = pattern.match(layer_name)
        if match:
            return template.format(*match.groups())
    return layer_name


def sk_units(model):
    """{unit name: SelectiveKernel layer} in network order, for units exposing attention.

    A unit whose paper name is already taken keeps its layer name, so no unit is lost.
    """
    units = {}
    for layer in nested_layers(model):
        if isinstance(layer, SelectiveKernel) and layer.return_attention:
            name = paper_unit_name(layer.name)
            units[layer.name if name in units else name] = layer
    return units


def attention_model(model, units=None):
    """A model from `model`'s inputs to {unit name: attention (N, M, C)}.

    `units` (names from `sk_units`) limits the outputs; default: every unit.
    """
    available = sk_units(model)
    if not available:
        raise ValueError(
            f"model {model.name!r} has no SelectiveKernel layer that exposes its attention")
    chosen = list(available) if units is None else list(units)
    unknown = [u for u in chosen if u not in available]
    if unknown:
        raise ValueError(f"unknown SK unit(s) {', '.join(unknown)} in {model.name!r}; it has "
                         f"{', '.join(available)}")
    outputs = {name: available[name].output[1] for name in chosen}
    return keras.Model(model.inputs, outputs, name=f"{model.name}_attention")


def stage_and_unit(name):
    """(stage, unit) of a paper name `SK_s_u`, or None for a name that is not one."""
    match = _PAPER_NAME.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def receptive_field(branch):
    """Side of the receptive field of a (kernel, dilation, groups) branch: d·(k − 1) + 1."""
    kernel, dilation = branch[0], branch[1]
    return dilation * (kernel - 1) + 1


def default_branches(branches):
    """(larger, smaller): the branches with the largest and smallest receptive field
    (first of equals), the paper's "5×5" and "3×3" for M = 2."""
    fields = [receptive_field(b) for b in branches]
    larger = max(range(len(fields)), key=lambda m: (fields[m], -m))
    smaller = min(range(len(fields)), key=lambda m: (fields[m], m))
    if larger == smaller:
        raise ValueError(f"the branches {list(branches)} all have the same receptive field: "
                         "name the two to compare with --branches")
    return larger, smaller


def branch_label(branch):
    """`3x3 d2 (5x5)`: a branch as the paper talks of it."""
    kernel, dilation = branch[0], branch[1]
    if dilation == 1:
        return f"{kernel}x{kernel}"
    field = receptive_field(branch)
    return f"{kernel}x{kernel} d{dilation} ({field}x{field})"


def branch_means(attention):
    """Per image, per branch: mean over channels, (N, M, C) → (N, M) float64."""
    return np.asarray(attention, np.float64).mean(-1)


def mean_attention_difference(attention, larger_branch=1, smaller_branch=0):
    """Per image: mean over channels of a[larger] − a[smaller] (paper Figs. 2–4)."""
    means = branch_means(attention)
    return means[:, larger_branch] - means[:, smaller_branch]


def default_channel_unit(units):
    """The unit of Fig. 3 (left): SK_3_4 if there is one, else the last unit of the second
    stage (SK_3_4 is the last unit of SKNet-50's second SK stage)."""
    if "SK_3_4" in units:
        return "SK_3_4"
    stages = _last_units(units)
    return stages[min(1, len(stages) - 1)] if stages else (units[0] if units else None)


def default_class_units(units):
    """The units of Figs. 2 and 4: SKNet-50's SK_2_3, SK_3_4, SK_5_3 are the last units of
    its first, second and last SK stages; the same choice for any network."""
    stages = _last_units(units)
    if not stages:
        return list(units[:3])
    return list(dict.fromkeys(stages[:2] + stages[-1:]))


def _last_units(units):
    """The last unit of each stage, in stage order, among paper-named units."""
    last = {}
    for name in units:
        position = stage_and_unit(name)
        if position and position[1] >= last.get(position[0], (0, ""))[0]:
            last[position[0]] = (position[1], name)
    return [last[stage][1] for stage in sorted(last)]
