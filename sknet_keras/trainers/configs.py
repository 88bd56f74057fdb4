"""Typed training configuration and the papers' recipes (TF Model Garden's `configs/` idea).

An `ExperimentConfig` is everything a run needs: model, data, optimizer and schedule,
runtime. Each setting is declared once, as a dataclass field whose metadata carries its help,
its command-line name, its allowed values and its check (`setting`): the commands' flags
(`config_flags`), the validation and the error messages are derived from it, so adding a
setting is adding one field. Configs are frozen; `override` returns a changed copy. A named
recipe gives the defaults; the resolved config (`experiment.resolve`) is written to
`model_dir/config.json`, so that evaluation, analysis and a resumed run know exactly what
the run was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from typing import Optional, Tuple

from sknet_keras.atomic_files import atomic_open
from sknet_keras.normalization import MODES
from sknet_keras.trainers import settings
from sknet_keras.trainers.settings import ConfigError, above, at_least, each_at_least, setting
from sknet_keras.trainers.settings import within

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
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
CONFIG_FILE = "config.json"
# The trainer's --export names and the file (or folder) each writes in --model_dir.
EXPORT_FILES = {"weights": "final.weights.h5", "keras": "final.keras",
                "saved_model": "saved_model", "litert": "final.tflite", "onnx": "final.onnx"}
DEFAULT_EXPORTS = ("weights", "keras", "saved_model")


def default_recipe(dataset):
    """The recipe a dataset trains with when --recipe is not given."""
    return DATASETS.get(dataset, TFDS_RECIPE)


def _ascending_epochs(v):
    return all(x >= 0 for x in v) and list(v) == sorted(v)


def _crop_range(v):
    return len(v) == 2 and 0 < v[0] <= v[1] <= 1


def _tfds_name(v):
    return bool(_TFDS_NAME.fullmatch(v or ""))


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The network: a registry name, its initial weights and how its layers run."""

    name: str = setting("sknet26", "Registry model name.", flag="model", evaluate=True)
    weights: Optional[str] = setting(
        None, "Initial weights: 'imagenet' or a weights file (training: every layer but the "
        "classifier, which is re-created for the dataset's classes; evaluation: the whole "
        "model).", evaluate=True)
    num_classes: Optional[int] = setting(None, "Classifier size (default: the dataset's).",
                                         check=at_least(2))
    sync_bn: bool = setting(False, "Synchronize BN batch statistics across replicas.")
    rematerialize: bool = setting(False, "Recompute each SK unit in the backward (less "
                                  "memory, slower steps).")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Dataset, resolution, normalization and augmentation."""

    dataset: str = setting("digits", f"Dataset: {DATASET_HELP}.", evaluate=True,
                           check=(_tfds_name, f"a dataset name: {DATASET_HELP}"))
    data_dir: Optional[str] = setting(None, "tfds data_dir, or the image_folder root.",
                                      evaluate=True)
    image_size: int = setting(32, "Training and evaluation resolution.", check=at_least(32))
    eval_image_sizes: Tuple[int, ...] = setting(
        (), "Evaluation resolutions of an evaluation (default: image_size).",
        flag="image_sizes", check=each_at_least(32), evaluate=True)
    normalization: Optional[str] = setting(
        None, "Input normalization (default: the weights' own).", evaluate=True,
        choices=MODES)
    augment: str = setting("none", "Training augmentation.",
                           choices=("senet", "lightweight", "cifar", "none"))
    crop_area: Tuple[float, float] = setting(
        (0.08, 1.0), "Random-crop area range (senet, lightweight), e.g. 0.25,1.",
        check=(_crop_range, "two fractions 0 < low <= high <= 1"))
    rotation: float = setting(10.0, "Random rotation range in degrees (SENet: 10).",
                              check=at_least(0))
    pixel_jitter: float = setting(20.0, "Random per-channel shift range (SENet: 20).",
                                  check=at_least(0))
    randaugment_magnitude: float = setting(
        0.0, "keras-cv RandAugment magnitude (0: off; its draws are not replayed exactly on "
        "resume).", check=within(0, 1))
    randaugment_ops: int = setting(2, "RandAugment operations per image.", check=at_least(1))
    mixup_alpha: float = setting(0.0, "MixUp alpha (0: off).", check=at_least(0))
    cutmix_alpha: float = setting(0.0, "CutMix alpha (0: off).", check=at_least(0))
    crop_fraction: float = setting(0.875, "Evaluation: centre crop of the resized image "
                                   "(0.875: 224 from 256).", check=(lambda v: 0 < v <= 1,
                                                                    "in (0, 1]"),
                                   evaluate=True)
    eval_interpolation: str = setting("bicubic", "Evaluation resize method.",
                                      flag="interpolation", choices=("bicubic", "bilinear"),
                                      evaluate=True)
    on_bad_image: str = setting("skip", "Corrupt images: skip (named, counted) or stop the "
                                "run.", choices=("skip", "stop"))
    shuffle_buffer: int = setting(10_000, "Training shuffle buffer (examples).",
                                  check=at_least(1))


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer, learning-rate schedule and regularization."""

    optimizer: str = setting("sgd", "Optimizer (SGD and RMSprop with momentum 0.9).",
                             choices=("sgd", "adamw", "rmsprop"))
    learning_rate: float = setting(0.1, "Learning rate for reference_batch_size, scaled "
                                   "linearly with batch_size.", check=above(0))
    reference_batch_size: int = setting(256, "The batch size learning_rate is stated for.",
                                        check=at_least(1))
    schedule: str = setting("step", "Learning-rate schedule.", flag="lr_schedule",
                            choices=("step", "cosine"))
    warmup_epochs: float = setting(0.0, "Linear warmup epochs.", check=at_least(0))
    decay_epochs: float = setting(30.0, "Step schedule: epochs between decays.",
                                  check=above(0))
    milestones: Tuple[float, ...] = setting(
        (), "Step schedule: the epochs of the decays instead, e.g. 150,225.",
        flag="lr_milestones", check=(_ascending_epochs, "ascending epochs >= 0"))
    decay_rate: float = setting(0.1, "Step schedule: factor of each decay.",
                                check=(lambda v: 0 < v <= 1, "in (0, 1]"))
    weight_decay: float = setting(1e-4, "Weight decay (not on BN or biases).",
                                  check=at_least(0))
    label_smoothing: float = setting(0.1, "Label smoothing.", check=within(0, 1, False))
    backbone_lr_multiplier: float = setting(
        1.0, "Fine-tuning: learning-rate factor of the pretrained layers (the new classifier "
        "gets the full rate).", check=at_least(0))
    freeze_backbone_epochs: float = setting(
        0.0, "Fine-tuning: epochs during which only the new classifier trains.",
        check=at_least(0))


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the steps run."""

    strategy: str = setting("default", "tf.distribute strategy.", choices=STRATEGIES)
    cpu_replicas: int = setting(1, "Split the CPU into N logical devices (replicas).",
                                check=at_least(1))
    tpu: Optional[str] = setting(None, "TPU address (strategy tpu).")
    precision: Optional[str] = setting(
        None, "Precision (default: float16 on a GPU, bfloat16 on a TPU or a CPU with native "
        "bfloat16, float32 elsewhere).", flag="mixed_precision", choices=tuple(PRECISIONS),
        evaluate=True)
    jit_compile: bool = setting(False, "XLA-compile the per-replica forward/backward.")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How long, how big, and how often to checkpoint."""

    epochs: int = setting(10, "Epochs.", check=at_least(1))
    batch_size: int = setting(64, "Global batch size.", check=at_least(1), evaluate=True)
    steps_per_epoch: Optional[int] = setting(None, "Steps per epoch (default: training "
                                             "examples // batch size).", check=at_least(1))
    max_steps: Optional[int] = setting(None, "Stop after this many steps in all.",
                                       check=at_least(1))
    steps_per_loop: int = setting(50, "Steps per tf.function call (and per checkpoint).",
                                  check=at_least(1))
    seed: int = setting(0, "Random seed (weights, data order, augmentation).")


SECTIONS = {"model": ModelOptions, "data": DataConfig, "optimizer": OptimizerConfig,
            "runtime": RuntimeConfig, "schedule": ScheduleConfig}


def _field_types(cls):
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


# "section.field" -> (dataclasses.Field, type)
FIELDS = {f"{section}.{name}": spec for section, cls in SECTIONS.items()
          for name, spec in _field_types(cls).items()}


def short_flag(dotted):
    """The short command-line name of a field: its `flag`, else its own name."""
    field = FIELDS[dotted][0]
    return field.metadata["flag"] or field.name


def locate(key):
    """"section.field" for a dotted key, a field's unique bare name or its short flag."""
    if key in FIELDS:
        return key
    owners = [d for d in FIELDS if d.split(".")[1] == key or short_flag(d) == key]
    if len(owners) == 1:
        return owners[0]
    raise ConfigError(key, "no such setting" + (f"; did you mean {' or '.join(owners)}?"
                                                if owners else ""))


# Rules between settings: (fields they concern, the first named in errors; holds; message).
RULES = [
    (("runtime.cpu_replicas", "runtime.strategy"),
     lambda c: c.runtime.cpu_replicas == 1 or c.runtime.strategy in (
         "mirrored", "multi_worker_mirrored"),
     lambda c: f"{c.runtime.cpu_replicas} replicas need runtime.strategy mirrored or "
               f"multi_worker_mirrored; got {c.runtime.strategy}"),
    (("runtime.jit_compile", "model.sync_bn"),
     lambda c: not (c.runtime.jit_compile and c.model.sync_bn),
     lambda c: "cannot be combined with model.sync_bn (synchronized BN all-reduces inside "
               "the XLA-compiled per-replica step)"),
    (("data.dataset", "data.data_dir"),
     lambda c: c.data.dataset != "image_folder" or bool(c.data.data_dir),
     lambda c: "image_folder needs data.data_dir (the folder holding train/<class>/* and "
               "validation/<class>/*)"),
    (("runtime.tpu", "runtime.strategy"),
     lambda c: c.runtime.strategy != "tpu" or bool(c.runtime.tpu) or "TPU_NAME" in os.environ,
     lambda c: "runtime.strategy tpu needs the TPU's address (or TPU_NAME)"),
    (("optimizer.freeze_backbone_epochs", "model.weights"),
     lambda c: not c.optimizer.freeze_backbone_epochs or c.model.weights is not None,
     lambda c: "fine-tuning needs model.weights (a pretrained backbone to freeze)"),
    (("optimizer.backbone_lr_multiplier", "model.weights"),
     lambda c: c.optimizer.backbone_lr_multiplier == 1.0 or c.model.weights is not None,
     lambda c: "fine-tuning needs model.weights (a pretrained backbone)"),
    (("runtime.tpu", "runtime.strategy"),
     lambda c: c.runtime.tpu is None or c.runtime.strategy == "tpu",
     lambda c: f"only runtime.strategy tpu uses a TPU address; got {c.runtime.strategy}"),
    (("optimizer.backbone_lr_multiplier", "runtime.precision"),
     lambda c: c.optimizer.backbone_lr_multiplier == 1.0 or c.runtime.precision != "float16",
     lambda c: "needs runtime.precision bfloat16 or float32 (float16 loss scaling covers one "
               "optimizer)"),
]


@dataclasses.dataclass(frozen=True)
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
        """Inverse of `to_dict`, every value checked against its field's type; unknown keys
        are an error (a config from another version)."""
        if not isinstance(d, dict):
            raise ConfigError("config", f"a mapping of sections expected; got {type(d).__name__}")
        unknown = sorted(set(d) - set(SECTIONS) - {"recipe"})
        if unknown:
            raise ConfigError(unknown[0], f"unknown section; expected {', '.join(SECTIONS)}")
        kwargs = {"recipe": d["recipe"]} if "recipe" in d else {}
        if not isinstance(kwargs.get("recipe", ""), str):
            raise ConfigError("recipe", f"a string expected; got {kwargs['recipe']!r}")
        for section, section_cls in SECTIONS.items():
            values = d.get(section, {})
            if not isinstance(values, dict):
                raise ConfigError(section, f"a mapping expected; got {values!r}")
            names = {f.name for f in dataclasses.fields(section_cls)}
            for key in values:
                if key not in names:
                    raise ConfigError(f"{section}.{key}", "no such setting")
            kwargs[section] = section_cls(**{k: settings.coerce(f"{section}.{k}",
                                                                FIELDS[f"{section}.{k}"][1], v)
                                             for k, v in values.items()})
        return cls(**kwargs)

    def override(self, **changes):
        """A copy with settings replaced; keys are "section.field" (or, as keyword
        arguments, a field's unique bare name or short flag); values are coerced to the
        field's type."""
        d = self.to_dict()
        for key, value in changes.items():
            if key == "recipe":
                d["recipe"] = value
                continue
            section, name = locate(key).split(".")
            d[section][name] = value
        return ExperimentConfig.from_dict(d)

    def get(self, dotted):
        return getattr(getattr(self, dotted.split(".")[0]), dotted.split(".")[1])

    @property
    def precision_policy(self):
        return PRECISIONS[self.runtime.precision or "float32"]

    @property
    def eval_sizes(self):
        """The resolutions an evaluation measures."""
        return self.data.eval_image_sizes or (self.data.image_size,)

    def validate(self):
        """Raise ConfigError naming the field of the first setting that cannot work: each
        field's own requirement, then the rules between fields. Returns self."""
        for dotted in FIELDS:
            error = settings.check(dotted, *FIELDS[dotted], self.get(dotted))
            if error:
                raise error
        for fields, holds, message in RULES:
            if not holds(self):
                raise ConfigError(fields[0], message(self))
        return self


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
    """A named recipe, optionally for another dataset."""
    if name not in RECIPES:
        raise ConfigError("recipe", f"unknown recipe {name!r}; expected one of "
                                    f"{', '.join(sorted(RECIPES))}")
    config = RECIPES[name]
    return config if dataset is None else config.override(dataset=dataset)


def write_config(config, model_dir):
    """model_dir/config.json, written atomically."""
    path = os.path.join(model_dir, CONFIG_FILE)
    with atomic_open(path) as f:
        f.write(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def load_config_file(path, field="config_file"):
    """The ExperimentConfig in a JSON file (a run's config.json), or ConfigError naming the
    file (as `field`) and what is wrong with it."""
    try:
        with open(path) as f:
            return ExperimentConfig.from_dict(json.load(f))
    except ConfigError as e:
        raise ConfigError(field, f"{path}: {e}") from None
    except json.JSONDecodeError as e:
        why = f"not valid JSON ({e.msg}, line {e.lineno} column {e.colno})"
    except OSError as e:
        why = e.strerror or str(e)
    except (ValueError, RecursionError) as e:  # not UTF-8; nesting too deep for the parser
        why = f"not a readable JSON config ({str(e)[:120]})"
    raise ConfigError(field, f"{path}: {why}")


def read_config(model_dir):
    """The ExperimentConfig a trainer wrote into `model_dir`, or None if there is none."""
    path = os.path.join(model_dir, CONFIG_FILE)
    return load_config_file(path, "model_dir") if os.path.isfile(path) else None


def differences(old, new):
    """[(dotted field, old value, new value)] between two configs."""
    return [(d, old.get(d), new.get(d)) for d in FIELDS if old.get(d) != new.get(d)] + (
        [("recipe", old.recipe, new.recipe)] if old.recipe != new.recipe else [])
