"""Write tests/data/timm_hub/: for every timm architecture the package loads through
keras-hub (`sknet_keras.convert.timm.TIMM_ARCHITECTURES`), timm's own `config.json` (as
`timm.models.push_to_hf_hub` writes it), the state_dict's keys and shapes, and timm's logits
and stage outputs for random, non-trivial weights and BatchNorm statistics made from those
keys by `tests/timm_random.py` (which the tests run again, without timm, to rebuild them).

Needs torch and timm (a pinned timm: 1.0.31), not the package:

    pip install --target /tmp/timmlib "timm==1.0.31" --no-deps
    PYTHONPATH=/tmp/timmlib python tools/make_timm_hub_goldens.py tests/data/timm_hub
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests")]

# The architectures, by hand: this tool must not import the package it checks.
ARCHITECTURES = (
    "skresnet18", "skresnet34", "skresnext50_32x4d", "resnext50_32x4d", "resnext101_32x4d",
    "resnext101_32x8d", "resnext101_32x16d", "resnext101_32x32d", "resnext101_64x4d",
    "seresnext50_32x4d", "seresnext101_32x4d", "seresnext101_32x8d", "seresnext101_64x4d",
    "legacy_seresnet50", "legacy_seresnet101", "legacy_seresnet152",
    "legacy_seresnext50_32x4d", "legacy_seresnext101_32x4d", "legacy_senet154",
    "resnest50d", "resnest101e", "resnest50d_4s2x40d", "resnest50d_1s4x24d",
)
SEED = 0
SAMPLES = 256


def main(out_dir, names=ARCHITECTURES):
    from make_timm_goldens import _without_torchvision

    _without_torchvision()
    import numpy as np
    import timm
    import torch
    from timm.models._hub import save_config_for_hf
    from timm_random import random_images, random_state

    torch.set_num_threads(os.cpu_count() or 1)
    for arch in names:
        model = timm.create_model(arch, pretrained=False)
        model.eval()
        state = {k: v for k, v in model.state_dict().items()
                 if not k.endswith("num_batches_tracked")}
        keys = list(state)
        shapes = [list(v.shape) for v in state.values()]
        tensors = random_state(keys, shapes, SEED)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()},
                              strict=False)
        missing = [k for k in model.state_dict() if k not in tensors
                   and not k.endswith("num_batches_tracked")]
        assert not missing, missing
        features = {}
        for level, name in zip((2, 3, 4, 5), ("layer1", "layer2", "layer3", "layer4")):
            getattr(model, name).register_forward_hook(
                lambda _m, _i, out, level=level: features.__setitem__(level, out.numpy()))
        x = random_images(SEED)
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).numpy()
        folder = os.path.join(out_dir, arch)
        os.makedirs(folder, exist_ok=True)
        save_config_for_hf(model, os.path.join(folder, "config.json"))
        with open(os.path.join(folder, "state_dict_keys.json"), "w") as f:
            json.dump({"keys": keys, "shapes": shapes, "seed": SEED}, f, separators=(",", ":"))
        golden = {"input_nchw": x, "logits": logits}
        rng = np.random.default_rng(SEED)
        for level, value in features.items():  # NCHW → NHWC: the Keras layout
            value = value.transpose(0, 2, 3, 1)
            golden[f"P{level}_channel_mean"] = value.mean(axis=(1, 2))
            index = rng.choice(value.size, SAMPLES, replace=False)
            golden[f"P{level}_index"] = index
            golden[f"P{level}_values"] = value.reshape(-1)[index]
            golden[f"P{level}_shape"] = np.asarray(value.shape)
        np.savez_compressed(os.path.join(folder, "golden.npz"), **golden)
        print(arch, f"{sum(v.size for v in tensors.values()) / 1e6:.1f}M params",
              f"logit std over images {logits.std(0).mean():.3g}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/timm_hub", sys.argv[2:] or ARCHITECTURES)
