"""Typed training configuration and the papers' recipes (TF Model Garden's `configs/` idea).

An `ExperimentConfig` is everything a run needs: model, data, optimizer and schedule,
runtime. A named recipe gives its defaults; command-line flags override single fields; the
resolved config is written to `model_dir/config.json` so that evaluation, analysis and a
resumed run know exactly what the run was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Optional, Tuple

# The datasets the trainer knows by name, each with its default recipe. Any other name is a
# tfds image-classification dataset (an "image" and a "label" feature), read by tfds and
# trained with TFDS_RECIPE unless --recipe says otherwise.
DATASETS = {"imagenet2012": "imagenet_senet", "image_folder": "imagenet_senet",
            "cifar10": "cifar", "cifar100": "cifar", "digits": "digits"}
TFDS_RECIPE = "imagenet_senet"
DATASET_HELP = (f"{', '.join(DATASETS)}, or the name of any tfds image-classification "
                "dataset (features image and label; prepared in --data_dir)")
# A tfds name, with an optional config and version: "oxford_flowers102", "cifar10:3.0.2".
_TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[A-Za-z0-9_.\-]+)?(:[0-9.*]+)?")


def default_recipe(dataset):
    """The recipe a dataset trains with when --recipe is not given."""
    return DATASETS.get(dataset, TFDS_RECIPE)
AUGMENTATIONS = ("senet", "lightweight", "cifar", "none")
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("step", "cosine")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
CONFIG_FILE = "config.json"
# The trainer's --export names and the file (or folder) each writes in --model_dir.
EXPORT_FILES = {"weights": "final.weights.h5", "keras": "final.keras",
                "saved_model": "saved_model", "litert": "final.tflite", "onnx": "final.onnx"}
DEFAULT_EXPORTS = ("weights", "keras", "saved_model")


class ConfigError(ValueError):
    """A configuration that cannot run, naming the field (flag) at fault."""


@dataclasses.dataclass
class ModelOptions:
    """The network: a registry name, its initial weights and how its layers run."""

    name: str = "sknet26"
    weights: Optional[str] = None  # None, "imagenet" or a weights file (fine-tuning)
    num_classes: Optional[int] = None  # None: the dataset's
    sync_bn: bool = False
    rematerialize: bool = False


@dataclasses.dataclass
class DataConfig:
    """Dataset, resolution, normalization and augmentation."""

    dataset: str = "digits"
    data_dir: Optional[str] = None
    image_size: int = 32
    normalization: Optional[str] = None  # None: the weights' own (preprocessing_mode)
    augment: str = "none"
    crop_area: Tuple[float, float] = (0.08, 1.0)  # random-crop area range (senet, lightweight)
    rotation: float = 10.0
    pixel_jitter: float = 20.0
    randaugment_magnitude: float = 0.0
    randaugment_ops: int = 2
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    crop_fraction: float = 0.875  # evaluation: centre crop of the resized image
    eval_interpolation: str = "bicubic"
    on_bad_image: str = "skip"
    shuffle_buffer: int = 10_000


@dataclasses.dataclass
class OptimizerConfig:
    """Optimizer, learning-rate schedule and regularization."""

    optimizer: str = "sgd"
    learning_rate: float = 0.1
    reference_batch_size: int = 256  # learning_rate is for this batch; scaled linearly
    schedule: str = "step"
    warmup_epochs: float = 0.0
    decay_epochs: float = 30.0  # step schedule: ×decay_rate every decay_epochs ...
    milestones: Tuple[float, ...] = ()  # ... or at these epochs
    decay_rate: float = 0.1
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    backbone_lr_multiplier: float = 1.0  # fine-tuning: the pretrained part learns slower
    freeze_backbone_epochs: float = 0.0  # fine-tuning: train only the new head first


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how the steps run."""

    strategy: str = "default"
    cpu_replicas: int = 1
    tpu: Optional[str] = None
    precision: Optional[str] = None  # None: bfloat16 on CPU / TPU, float16 on GPU
    jit_compile: bool = False


@dataclasses.dataclass
class ScheduleConfig:
    """How long, how big, and how often to checkpoint."""

    epochs: int = 10
    batch_size: int = 64
    steps_per_epoch: Optional[int] = None  # None: train examples // batch size
    max_steps: Optional[int] = None
    steps_per_loop: int = 50
    seed: int = 0


@dataclasses.dataclass
class ExperimentConfig:
    recipe: str = "digits"
    model: ModelOptions = dataclasses.field(default_factory=ModelOptions)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of `to_dict`; unknown keys are an error (a config from another version)."""
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name not in d:
                continue
            value = d[field.name]
            if field.name != "recipe":
                sub = {f.name: f for f in dataclasses.fields(SECTIONS[field.name])}
                unknown = sorted(set(value) - set(sub))
                if unknown:
                    raise ConfigError(f"unknown {field.name} settings {unknown}")
                value = SECTIONS[field.name](**{
                    k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            kwargs[field.name] = value
        return cls(**kwargs)

    def override(self, **changes):
        """A copy with `section.field` (or unique bare field name) values replaced."""
        config = ExperimentConfig.from_dict(self.to_dict())
        for key, value in changes.items():
            section, name = _locate(key)
            setattr(getattr(config, section), name, value)
        return config

    @property
    def precision_policy(self):
        return PRECISIONS[self.runtime.precision or "float32"]

    def validate(self):
        """Raise ConfigError naming the flag of the first setting that cannot work."""
        d, o, r, s = self.data, self.optimizer, self.runtime, self.schedule
        checks = [
            (bool(_TFDS_NAME.fullmatch(d.dataset or "")), "dataset",
             f"{d.dataset!r} is not a dataset name; expected {DATASET_HELP}"),
            (d.augment in AUGMENTATIONS, "augment", f"expected one of {AUGMENTATIONS}"),
            (d.image_size >= 32, "image_size", f"must be >= 32; got {d.image_size}"),
            (s.epochs >= 1, "epochs", f"must be >= 1; got {s.epochs}"),
            (s.batch_size >= 1, "batch_size", f"must be >= 1; got {s.batch_size}"),
            (s.steps_per_epoch is None or s.steps_per_epoch >= 1, "steps_per_epoch",
             f"must be >= 1; got {s.steps_per_epoch}"),
            (s.max_steps is None or s.max_steps >= 1, "max_steps",
             f"must be >= 1; got {s.max_steps}"),
            (s.steps_per_loop >= 1, "steps_per_loop", f"must be >= 1; got {s.steps_per_loop}"),
            (o.learning_rate > 0, "learning_rate", f"must be > 0; got {o.learning_rate}"),
            (o.optimizer in OPTIMIZERS, "optimizer", f"expected one of {OPTIMIZERS}"),
            (o.schedule in SCHEDULES, "lr_schedule", f"expected one of {SCHEDULES}"),
            (0 <= o.label_smoothing < 1, "label_smoothing",
             f"must be in [0, 1); got {o.label_smoothing}"),
            (o.weight_decay >= 0, "weight_decay", f"must be >= 0; got {o.weight_decay}"),
            (o.backbone_lr_multiplier >= 0, "backbone_lr_multiplier",
             f"must be >= 0; got {o.backbone_lr_multiplier}"),
            (o.freeze_backbone_epochs >= 0, "freeze_backbone_epochs",
             f"must be >= 0; got {o.freeze_backbone_epochs}"),
            (0 <= d.randaugment_magnitude <= 1, "randaugment_magnitude",
             f"must be in [0, 1]; got {d.randaugment_magnitude}"),
            (0 < d.crop_fraction <= 1, "crop_fraction", f"must be in (0, 1]; got "
                                                       f"{d.crop_fraction}"),
            (r.strategy in STRATEGIES, "strategy", f"expected one of {STRATEGIES}"),
            (r.cpu_replicas >= 1, "cpu_replicas", f"must be >= 1; got {r.cpu_replicas}"),
            (r.precision in (None, *PRECISIONS), "mixed_precision",
             f"expected one of {tuple(PRECISIONS)}"),
            (not (r.cpu_replicas > 1 and r.strategy in ("default", "one_device", "tpu")),
             "cpu_replicas", f"--cpu_replicas={r.cpu_replicas} needs --strategy=mirrored or "
                             f"multi_worker_mirrored (got --strategy={r.strategy})"),
            (not (r.jit_compile and self.model.sync_bn), "jit_compile",
             "--jit_compile and --sync_bn cannot be combined (synchronized BN all-reduces "
             "inside the XLA-compiled per-replica step)"),
            (not (d.dataset == "image_folder" and not d.data_dir), "data_dir",
             "--dataset=image_folder needs --data_dir"),
            (not (r.strategy == "tpu" and not r.tpu and "TPU_NAME" not in os.environ), "tpu",
             "--strategy=tpu needs --tpu (or TPU_NAME)"),
        ]
        for ok, flag, message in checks:
            if not ok:
                raise ConfigError(message if message.startswith("--") else
                                  f"--{flag}: {message}")
        return self


SECTIONS = {"model": ModelOptions, "data": DataConfig, "optimizer": OptimizerConfig,
            "runtime": RuntimeConfig, "schedule": ScheduleConfig}


def _locate(key):
    if "." in key:
        section, name = key.split(".", 1)
        if section in SECTIONS and name in {f.name for f in dataclasses.fields(SECTIONS[section])}:
            return section, name
    else:
        owners = [s for s, cls in SECTIONS.items()
                  if key in {f.name for f in dataclasses.fields(cls)}]
        if len(owners) == 1:
            return owners[0], key
    raise ConfigError(f"unknown setting {key!r}")


def _recipe(name, **changes):
    return ExperimentConfig(recipe=name).override(**changes)


# The papers' recipes. Learning rates are stated for `reference_batch_size` and scale
# linearly with the batch size actually used.
RECIPES = {
    # SENet / SKNet ImageNet: SGD 0.9, lr 0.1 per 256, ×0.1 every 30 epochs, 100 epochs,
    # weight decay 1e-4, label smoothing; random 8–100 % crop, mirror, ±10° rotation,
    # ±20 pixel jitter; evaluation: shorter side 256, centre crop 224.
    "imagenet_senet": _recipe(
        "imagenet_senet", dataset="imagenet2012", image_size=224, augment="senet",
        epochs=100, batch_size=256, learning_rate=0.1, decay_epochs=30, weight_decay=1e-4),
    # Small ImageNet models (ShuffleNetV2 ± SE/SK, SKNet paper Table 4): weight decay 4e-5
    # and lighter augmentation (crop 25–100 % of the area, no rotation or jitter).
    "imagenet_lightweight": _recipe(
        "imagenet_lightweight", dataset="imagenet2012", image_size=224, augment="lightweight",
        crop_area=(0.25, 1.0), rotation=0.0, pixel_jitter=0.0, epochs=100, batch_size=256,
        learning_rate=0.1, decay_epochs=30, weight_decay=4e-5),
    # ResNeXt paper, CIFAR: batch 128, lr 0.1, 300 epochs, ×0.1 at 150 and 225, weight decay
    # 5e-4, 4-pixel padding + random 32×32 crop + mirror.
    "cifar": _recipe(
        "cifar", dataset="cifar10", image_size=32, augment="cifar", epochs=300,
        batch_size=128, learning_rate=0.1, reference_batch_size=128, milestones=(150, 225),
        weight_decay=5e-4, label_smoothing=0.0),
    # The bundled default: scikit-learn's 8×8 digits upsampled to 32×32, a few minutes on CPU.
    "digits": _recipe(
        "digits", dataset="digits", image_size=32, augment="none", epochs=10, batch_size=64,
        learning_rate=0.1, schedule="cosine"),
}


def recipe(name, dataset=None):
    """A fresh copy of a named recipe, optionally for another dataset."""
    if name not in RECIPES:
        raise ConfigError(f"--recipe: unknown recipe {name!r}; expected one of "
                          f"{', '.join(sorted(RECIPES))}")
    config = RECIPES[name].override()
    if dataset is not None:
        config.data.dataset = dataset
    return config


def write_config(config, model_dir):
    """model_dir/config.json, written atomically."""
    path = os.path.join(model_dir, CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_config(model_dir):
    """The ExperimentConfig a trainer wrote into `model_dir`, or None if there is none."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return ExperimentConfig.from_dict(json.load(f))
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as e:
        # ValueError: bad JSON or UTF-8, and ConfigError; RecursionError: deep nesting.
        raise ConfigError(f"{path} is not a readable run configuration: "
                          f"{type(e).__name__}: {str(e)[:200]}") from None


def differences(old, new, prefix=""):
    """[(dotted field, old value, new value)] between two configs."""
    a, b = old.to_dict(), new.to_dict()
    out = []
    for section in a:
        if isinstance(a[section], dict):
            for k in a[section]:
                if a[section][k] != b[section].get(k):
                    out.append((f"{section}.{k}", a[section][k], b[section][k]))
        elif a[section] != b[section]:
            out.append((section, a[section], b[section]))
    return out
