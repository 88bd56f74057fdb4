"""The paper's attention analysis (SKNet §6): read every SK unit's attention out of a model.

Application models build their SK units with `return_attention=True`, so the attention
(N × M × C, float32) of unit `conv{s}_block{u}_2_sk` — the paper's SK_{s}_{u} — is a tensor
of the model's graph; `attention_model` exposes them all without rebuilding or reloading.
"""

import re

import keras
import numpy as np

from sknet_keras.layers import SelectiveKernel

_UNIT = re.compile(r"conv(\d+)_block(\d+)_\d+_sk$")


def paper_unit_name(layer_name):
    """`conv3_block4_2_sk` → `SK_3_4` (the paper's naming); other names pass through."""
    match = _UNIT.match(layer_name)
    return f"SK_{match.group(1)}_{match.group(2)}" if match else layer_name


def attention_model(model):
    """A model from `model`'s inputs to {paper unit name: attention (N, M, C)}."""
    outputs = {}
    for layer in model.layers:
        if isinstance(layer, SelectiveKernel) and layer.return_attention:
            outputs[paper_unit_name(layer.name)] = layer.output[1]
    if not outputs:
        raise ValueError(
            f"model {model.name!r} has no SelectiveKernel layer that exposes its attention"
        )
    return keras.Model(model.inputs, outputs, name=f"{model.name}_attention")


def mean_attention_difference(attention, larger_branch=1, smaller_branch=0):
    """Per image: mean over channels of a[larger] − a[smaller] (paper Fig. 2/4)."""
    attention = np.asarray(attention)
    return attention[:, larger_branch, :].mean(-1) - attention[:, smaller_branch, :].mean(-1)
