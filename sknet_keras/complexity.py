"""Multiply-accumulate counts (conv + fc), measured from a built model's layers."""

import math

import keras


def layer_macs(layer, input_shape):
    """MACs of one layer for one image of `input_shape` (batch dim included, static H, W)."""
    if hasattr(layer, "count_macs"):
        return int(layer.count_macs(input_shape))
    if isinstance(layer, keras.layers.Conv2D):
        out = layer.compute_output_shape(input_shape)
        kh, kw = layer.kernel_size
        return int(out[1] * out[2] * kh * kw * (input_shape[-1] // layer.groups) * layer.filters)
    if isinstance(layer, keras.layers.Dense):
        positions = math.prod(input_shape[1:-1]) if len(input_shape) > 2 else 1
        return int(positions * input_shape[-1] * layer.units)
    return 0


def count_macs(model):
    """Total conv + fc multiply-accumulates per image of a functional model."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer.input, (list, tuple)):  # merges (Add): no multiply-adds
            continue
        shape = tuple(layer.input.shape)
        if any(d is None for d in shape[1:]):
            raise ValueError(
                f"count_macs needs a static input size; layer {layer.name!r} sees {shape}"
            )
        total += layer_macs(layer, shape)
    return total
