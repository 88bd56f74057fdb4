"""timm's checkpoints of this package's networks through keras-hub's `from_preset`.

keras-hub reads a timm repository (`hf://timm/NAME.TAG`, or a folder laid out as one:
`config.json` with `architecture` and `pretrained_cfg`, then `model.safetensors` or
`pytorch_model.bin`) only for the architectures it converts itself, and refuses the others.
Importing `sknet_keras.hub` gives its timm loader the architectures of
`sknet_keras.convert.timm.TIMM_ARCHITECTURES` (SK-ResNet, SK-ResNeXt, ResNeXt, SE-ResNeXt and
timm's ports of the SENet release); every other architecture stays keras-hub's:

    import keras_hub, sknet_keras.hub
    classifier = keras_hub.models.ImageClassifier.from_preset("hf://timm/skresnext50_32x4d.ra_in1k")
    backbone = keras_hub.models.Backbone.from_preset("hf://timm/legacy_senet154.in1k")

The classifier's preprocessor is the checkpoint's `pretrained_cfg`: centre crop (`crop_pct`),
resize to `input_size` with its interpolation, then (x / 255 - mean) / std. keras-hub offers
no public way to add a format, so the hook is the narrowest one there is (keras-hub's
`TimmPresetLoader`, replaced by a subclass: `sknet_keras.internals.keras_hub_timm_loader`);
where a keras-hub release changes it, `load_timm_preset` does the same without it.
"""

import json
import os

from sknet_keras import internals
from sknet_keras.convert.timm import TIMM_ARCHITECTURES, read_timm_checkpoint, timm_architecture
from sknet_keras.extras import require
from sknet_keras.hub.models import BACKBONES, CLASSIFIERS
from sknet_keras.registry import get_model_config
from sknet_keras.weights.files import assign_checked

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# timm's constructor arguments that leave the network as its architecture name says (the
# drop rates act only in training).
_NEUTRAL_ARGS = {"in_chans": 3, "global_pool": "avg"}
_TRAINING_ONLY_ARGS = ("drop_rate", "drop_path_rate", "drop_block_rate")


def _hf_download(preset, name):
    """The local path of `name` in the Hugging Face repository `hf://OWNER/REPO`, or None."""
    hub = require("huggingface_hub", "loading an hf:// preset")
    repo = preset.removeprefix("hf://")
    try:
        return hub.hf_hub_download(repo_id=repo, filename=name)
    except hub.errors.EntryNotFoundError:
        return None


def preset_file(preset, name):
    """The local path of file `name` of a preset (a folder or `hf://OWNER/REPO`), or None."""
    preset = os.fspath(preset)
    if preset.startswith("hf://"):
        return _hf_download(preset, name)
    if "://" in preset:
        raise ValueError(f"{preset!r}: timm checkpoints are read from a folder or an hf:// "
                         "handle")
    path = os.path.join(preset, name)
    return path if os.path.isfile(path) else None


def read_timm_config(preset):
    """The `config.json` of a timm repository, checked to be one this package loads."""
    path = preset_file(preset, "config.json")
    if path is None:
        raise FileNotFoundError(f"{os.fspath(preset)!r} has no config.json: not a timm "
                                "repository")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if not isinstance(config, dict) or "architecture" not in config:
        raise ValueError(f"{path!r} is not a timm config.json (no 'architecture')")
    timm_architecture(config["architecture"])  # a clear error for the others
    changed = {k: v for k, v in config.get("model_args", {}).items()
               if k not in ("num_classes", *_TRAINING_ONLY_ARGS)
               and _NEUTRAL_ARGS.get(k, object()) != v}
    if changed:
        raise ValueError(f"{path!r}: the checkpoint's network is not timm's "
                         f"{config['architecture']} as published (model_args {changed})")
    return config


class TimmPreset:
    """One timm repository of a network this package builds: its backbone, classifier and
    image converter, with the checkpoint's weights."""

    def __init__(self, preset, config=None):
        self.preset = preset
        self.config = config if config is not None else read_timm_config(preset)
        self.network = timm_architecture(self.config["architecture"])
        self._tensors = None

    @property
    def classes(self):
        return int(self.config.get("num_classes") or 1000)

    def tensors(self):
        """{Keras weight path: array} of the checkpoint (read once)."""
        if self._tensors is None:
            from sknet_keras.convert.releases import source_to_keras

            for name in WEIGHT_FILES:
                path = preset_file(self.preset, name)
                if path is not None:
                    break
            else:
                raise FileNotFoundError(f"{os.fspath(self.preset)!r} holds neither "
                                        f"{' nor '.join(WEIGHT_FILES)}")
            self._tensors = source_to_keras("timm", self.network, read_timm_checkpoint(path),
                                            path)
        return self._tensors

    def backbone(self, cls=None, load_weights=True, **kwargs):
        cls = cls or BACKBONES[self.network.family]
        backbone = cls(architecture=self.network, **kwargs)
        if load_weights:
            assign_checked(backbone, self.tensors(), os.fspath(self.preset))
        return backbone

    def image_converter(self, cls=None, **kwargs):
        config = get_model_config(self.network)
        cls = cls or CLASSIFIERS[config.family].preprocessor_cls.image_converter_cls
        cfg = self.config.get("pretrained_cfg") or {}
        size = cfg.get("input_size", (3, config.default_size, config.default_size))
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        interpolation = cfg.get("interpolation", "bilinear")
        crop = cfg.get("crop_pct")
        options = dict(
            image_size=tuple(size[1:]), scale=[1 / 255 / s for s in std],
            offset=[-m / s for m, s in zip(mean, std)],
            interpolation=interpolation if interpolation in ("bilinear", "nearest",
                                                              "bicubic") else "bilinear",
            crop_fraction=crop if cfg.get("crop_mode", "center") == "center" else None)
        return cls(**{**options, **kwargs})

    def classifier(self, cls=None, load_weights=True, load_head=True, **kwargs):
        config = get_model_config(self.network)
        cls = cls or CLASSIFIERS[config.family]
        backbone = kwargs.pop("backbone", None)
        if backbone is None:
            backbone = self.backbone(cls.backbone_cls, load_weights,
                                     **{k: kwargs.pop(k) for k in ("dtype", "image_shape")
                                        if k in kwargs})
        if "preprocessor" not in kwargs and cls.preprocessor_cls:
            kwargs["preprocessor"] = cls.preprocessor_cls(
                image_converter=self.image_converter(cls.preprocessor_cls.image_converter_cls))
        load_head = load_head and load_weights and "num_classes" not in kwargs
        kwargs.setdefault("num_classes", self.classes)
        task = cls(backbone=backbone, **kwargs)
        if load_head:
            tensors = self.tensors()
            task.output_dense.set_weights([tensors["predictions/kernel"],
                                           tensors["predictions/bias"]])
        return task


def load_timm_preset(preset, task="classifier", load_weights=True, **kwargs):
    """A timm checkpoint of a network of this package as a keras-hub `ImageClassifier`
    (`task="classifier"`) or `Backbone` (`task="backbone"`), without keras-hub's dispatch
    (what `from_preset` gives after `import sknet_keras.hub`)."""
    source = TimmPreset(preset)
    if task == "classifier":
        return source.classifier(load_weights=load_weights, **kwargs)
    if task == "backbone":
        return source.backbone(load_weights=load_weights, **kwargs)
    raise ValueError(f"task must be 'classifier' or 'backbone'; got {task!r}")


def loader_class(keras_hub_loader):
    """keras-hub's timm loader, extended with this package's architectures."""

    class SKNetTimmPresetLoader(keras_hub_loader):
        def __init__(self, preset, config):
            self.ours = config.get("architecture") in TIMM_ARCHITECTURES
            if not self.ours:
                super().__init__(preset, config)
                return
            self.preset, self.config = preset, config
            self.source = TimmPreset(preset, read_timm_config(preset))

        def check_backbone_class(self):
            if not self.ours:
                return super().check_backbone_class()
            return BACKBONES[self.source.network.family]

        def load_backbone(self, cls, load_weights, **kwargs):
            if not self.ours:
                return super().load_backbone(cls, load_weights, **kwargs)
            return self.source.backbone(cls, load_weights, **kwargs)

        def load_task(self, cls, load_weights, load_task_weights, **kwargs):
            if not self.ours:
                return super().load_task(cls, load_weights, load_task_weights, **kwargs)
            if not issubclass(cls, CLASSIFIERS[self.source.network.family]):
                raise ValueError(f"{self.preset!r} is an image classifier checkpoint; "
                                 f"{cls.__name__} is not one")
            return self.source.classifier(cls, load_weights, load_task_weights, **kwargs)

        def load_image_converter(self, cls, **kwargs):
            if not self.ours:
                return super().load_image_converter(cls, **kwargs)
            return self.source.image_converter(cls, **kwargs)

    SKNetTimmPresetLoader.package_loader = True
    return SKNetTimmPresetLoader


def install():
    """Give keras-hub's `from_preset` this package's timm architectures (idempotent; where
    keras-hub changed its loader, nothing: `load_timm_preset` still works)."""
    module = internals.keras_hub_timm_loader.get()
    if module is None or getattr(module.TimmPresetLoader, "package_loader", False):
        return
    module.TimmPresetLoader = loader_class(module.TimmPresetLoader)
