"""A timm state_dict of random, non-trivial weights and BatchNorm statistics, made from a key
list and a seed: the goldens' tool (tools/make_timm_hub_goldens.py, with timm) and the tests
(without timm or PyTorch) make the same tensors from the same manifest, so the repository
keeps only the manifest and timm's outputs, not hundreds of megabytes of weights."""

import zlib

import numpy as np


def random_tensor(key, shape, seed):
    """One tensor, by its name: BN scales and variances in [0.5, 1.5], shifts, means and
    biases around 0, convolution and linear weights He-scaled (so activations neither die
    nor explode through a hundred layers and every image gives different logits)."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    shape = tuple(shape)
    if key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if key.endswith(("running_mean", ".bias")):
        return rng.normal(0.0, 0.2, shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:]))
    return rng.normal(0.0, (2.0 / fan_in) ** 0.5, shape).astype(np.float32)


def _last_branch_norms(keys, shapes):
    """Each residual unit's last BatchNorm scale (`layer1.0.bn3.weight`, `conv3.bn.weight`...):
    the last 1-D `.weight` of a unit (keys in state_dict order) outside its shortcut and its
    SE / SK attention."""
    last = {}
    for key, shape in zip(keys, shapes):
        parts = key.split(".")
        if len(parts) > 3 and parts[0].startswith("layer") and key.endswith(".weight") \
                and len(shape) == 1 and not {"downsample", "se", "se_module", "attn",
                                             "paths"} & set(parts):
            last[".".join(parts[:2])] = key
    return set(last.values())


def random_state(keys, shapes, seed):
    """{key: float32 array} for a manifest's keys and shapes (no `num_batches_tracked`).

    Each unit's residual branch ends in a BatchNorm scaled by about 0.1: activations then
    stay near unit scale through a hundred units instead of doubling at each, so that
    float32 rounding does not grow into differences of 1e-2 between two correct networks."""
    damped = _last_branch_norms(keys, shapes)
    state = {k: random_tensor(k, s, seed) for k, s in zip(keys, shapes)}
    for key in damped:
        state[key] = state[key] * np.float32(0.1)
    return state


def random_images(seed, shape=(2, 3, 64, 80)):
    """Normalized NCHW images (what timm's model takes after its transforms)."""
    return np.random.default_rng(seed).normal(0.0, 1.0, shape).astype(np.float32)
