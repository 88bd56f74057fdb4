"""Write tests/data/mini_{resnext,seresnext}.random.safetensors and .golden.npz with timm.

timm's own `ResNet` with the blocks of `resnext50_32x4d` / `seresnext50_32x4d` (Bottleneck,
cardinality 8, base width 4, SE of timm's), shrunk to depths 2,2,1,1 and planes 16/32/64/128
(SE: 32/32/64/128), random non-trivial weights and BN statistics, and timm's logits
for a random input: an independent reference for the plain and SE bottleneck mappings
(tests/test_convert.py). Needs torch and timm (`pip install timm`), not the package.

    python tools/make_timm_goldens.py tests/data
"""

import importlib.abc
import importlib.machinery
import os
import sys
import types


def _without_torchvision():
    """timm imports torchvision at import time (its data transforms); the ResNet used here
    needs none of it. Stand-ins let timm import where torchvision's binary does not load."""
    class _Any(type):
        def __getattr__(cls, name):  # a distinct stand-in per name (timm keys dicts by them)
            if name.startswith("__"):
                raise AttributeError(name)
            made = _Any(name, (cls,), {})
            setattr(cls, name, made)
            return made

    class Placeholder(metaclass=_Any):
        def __init__(self, *args, **kwargs):
            pass

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = types.ModuleType(spec.name)
            module.__path__ = []
            module.__getattr__ = lambda attr: getattr(Placeholder, attr)
            return module

        def exec_module(self, module):
            pass

    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]
        sys.meta_path.insert(0, Finder())


def main(out_dir):
    _without_torchvision()
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from timm.models.resnet import Bottleneck, ResNet

    # SE: timm rounds the reduced width C / 16 up to a multiple of 8; from C = 128 (every SE
    # network of the registry) that is C / 16 itself, the papers' rule the package builds.
    for stem, channels, block_args in (("mini_resnext", (16, 32, 64, 128), {}),
                                       ("mini_seresnext", (32, 32, 64, 128), {"attn_layer": "se"})):
        torch.manual_seed(0)
        model = ResNet(Bottleneck, layers=(2, 2, 1, 1), channels=channels,
                       cardinality=8, base_width=4, num_classes=10, block_args=block_args)
        with torch.no_grad():
            for name, t in list(model.state_dict().items()):
                if name.endswith("num_batches_tracked"):
                    continue
                if name.endswith(("bn1.weight", "bn2.weight", "bn3.weight", ".1.weight")) or \
                        name.endswith("running_var"):
                    t.uniform_(0.5, 1.5)
                elif name.endswith(("running_mean", ".bias")):
                    t.normal_(0.0, 0.2)
                else:  # convolution / linear weights, He-scaled
                    fan_in = t[0].numel()
                    t.normal_(0.0, (2.0 / fan_in) ** 0.5)
        model.eval()
        x = torch.randn(2, 3, 64, 80)
        with torch.no_grad():
            logits = model(x)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(out_dir, f"{stem}.random.safetensors"))
        np.savez(os.path.join(out_dir, f"{stem}.golden.npz"), input_nchw=x.numpy(),
                 logits=logits.numpy())
        print(stem, logits.std(0).mean().item(), [k for k in state if "se." in k][:2])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data")
