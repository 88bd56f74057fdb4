"""Where a model comes from: one meaning of `--model` / `--weights` for every command that
loads one (evaluate, export, hub, the attention analysis).

`--weights` is one of:
- `imagenet`: the architecture's default release (`--model`, default sknet50), with its
  publisher's preprocessing, crop and interpolation;
- `architecture.tag`: that release (`sknet_keras.presets`), e.g. `resnext50.a1h_in1k`;
- a training run's folder (it holds config.json): the run's final weights
  (`final.weights.h5`) once it has finished, else its newest checkpoint (said in a note);
  the run's network, classes, image size, preprocessing, crop and interpolation;
- a weights file: beside a run's config.json (`RUN/final.weights.h5`), that run's settings as
  for the folder; else a file of this package, which names its network, or Keras' own
  `model.save_weights` file, read as `--model`'s network.

A weights file is read (and a damaged one refused, naming it) before anything else is
looked at, so that a weights problem is reported before a dataset problem.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

from sknet_keras import cli
from sknet_keras.trainers.configs import EXPORT_FILES, read_config

DEFAULT_MODEL = "sknet50"
WEIGHTS_HELP = ("'imagenet', 'architecture.tag' (a release), a weights file, or a training "
                "run's folder (its final weights, else its newest checkpoint, with its "
                "settings: image size, preprocessing).")


@dataclasses.dataclass
class ModelSource:
    """A network and the weights to load into it, with how its inputs must look."""

    model: str  # registry name
    weights: Optional[str]  # for build_model: "imagenet", "architecture.tag" or a file
    classes: int
    image_size: int
    normalization: str
    crop_fraction: float
    interpolation: str
    run: Optional[object] = None  # the run's ExperimentConfig, when from a run
    run_dir: Optional[str] = None
    checkpoint: Optional[str] = None  # an unfinished run's newest checkpoint (weights None)

    @property
    def size(self):
        return self.image_size

    def describe(self):
        return self.checkpoint or self.weights

    def build(self, include_top=True, input_shape=None, classifier_activation=None):
        """The Keras model with these weights (inputs `image_size`² unless `input_shape`)."""
        from sknet_keras.applications import build_model

        shape = input_shape or (self.image_size, self.image_size, 3)
        model = build_model(self.model, include_top=include_top, weights=self.weights,
                            input_shape=shape, classes=self.classes,
                            classifier_activation=classifier_activation)
        if self.checkpoint:
            import keras
            import tensorflow as tf

            if keras.backend.backend() != "tensorflow":
                raise cli.UsageError(f"--weights={self.run_dir}: the run has not finished and "
                                     "its checkpoints are read with TensorFlow; use "
                                     "KERAS_BACKEND=tensorflow, or finish the run")
            from sknet_keras.trainers.checkpoints import restore_checked

            restore_checked(tf.train.Checkpoint(model=model), self.checkpoint)
        return model


def _registry_name(model):
    from sknet_keras.registry import get_model_config

    try:
        return get_model_config(model).name
    except ValueError as e:
        raise cli.UsageError(f"--model: {e}") from None


def _classes_in(path):
    """The classifier width of a weights file (None if it has no classifier); a file that
    is not a readable weights file is refused in one line, naming it."""
    from sknet_keras.weights.files import is_sknet_weights_file, read_weights

    if is_sknet_weights_file(path):
        try:
            tensors, _ = read_weights(path)
        except ValueError as e:
            raise cli.UsageError(f"--weights: {e}") from None
        kernels = [t.shape[1] for name, t in tensors.items()
                   if name.startswith("predictions/") and t.ndim == 2]
        return int(kernels[0]) if len(kernels) == 1 else None
    import h5py

    found = []
    try:  # Keras' own `model.save_weights`: layers/<class name>[_i]/vars/<i>; the classifier
        # is the networks' one Dense layer at the top level
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: found.append(obj.shape[1]) if isinstance(
                obj, h5py.Dataset) and re.fullmatch(r"layers/dense(_\d+)?/vars/0", name)
                and obj.ndim == 2 else None)
    except Exception as e:  # h5py raises OSError, KeyError, RuntimeError ...
        raise cli.UsageError(f"--weights: {path} is not a readable weights file "
                             f"({type(e).__name__}: {str(e)[:200]})") from None
    return int(found[0]) if len(found) == 1 else None


def _from_run(run_dir, run, model, image_size, normalization, weights=None, classes=None,
              note=print):
    """A run's source: `weights` (a file of the run), else its final weights, else its
    newest checkpoint."""
    from sknet_keras.presets import preprocessing_mode

    if model is not None and _registry_name(model) != run.model.name:
        raise cli.UsageError(f"--model={model}: {run_dir} holds a run of {run.model.name} "
                             "(leave --model out, or give that name)")
    checkpoint = None
    if weights is None:
        final = os.path.join(run_dir, EXPORT_FILES["weights"])
        if os.path.isfile(final):
            weights, classes = final, _classes_in(final)
        else:
            from sknet_keras.trainers.checkpoints import latest_checkpoint

            checkpoint = latest_checkpoint(run_dir)
            if checkpoint is None:
                raise cli.UsageError(f"--weights: the run {run_dir} has neither "
                                     f"{EXPORT_FILES['weights']} nor a checkpoint yet")
            note(f"note: the run {run_dir} has not finished: its newest checkpoint, "
                 f"{checkpoint}")
    classes = classes or run.model.num_classes
    d = run.data
    return ModelSource(run.model.name, weights, classes, image_size or d.image_size,
                       normalization or d.normalization or preprocessing_mode(run.model.name),
                       d.crop_fraction, d.eval_interpolation, run, run_dir, checkpoint)


def resolve(model=None, weights="imagenet", image_size=None, normalization=None, note=print):
    """The `ModelSource` of `--model` / `--weights` (see the module's docstring); `note`
    says which checkpoint an unfinished run gives."""
    from sknet_keras.applications.builder import release_of
    from sknet_keras.presets import (PRESETS, evaluation_defaults, get_preset,
                                     models_with_weights, preprocessing_mode)
    from sknet_keras.registry import get_model_config, list_models
    from sknet_keras.weights.files import model_name_of, not_a_weights_file

    weights = weights or "imagenet"
    if os.path.isdir(weights):
        run = read_config(weights)
        if run is None:
            raise cli.UsageError(f"--weights: {weights} is a folder but not a training run "
                                 "(no config.json)")
        return _from_run(weights, run, model, image_size, normalization, note=note)
    if os.path.isfile(weights):
        classes = _classes_in(weights)  # read first: a damaged file is the first problem
        folder = os.path.dirname(os.path.abspath(weights))
        run = read_config(folder)
        if run is not None:  # a run's weights file: the run's settings
            return _from_run(folder, run, model, image_size, normalization, weights, classes)
        recorded = model_name_of(weights)
        if recorded is not None and recorded not in list_models():
            recorded = None  # a network of the user's own naming
        if model is None and recorded is None:
            raise cli.UsageError(f"--weights: {weights} does not name its network (a Keras "
                                 "weights file): give --model")
        name = _registry_name(model or recorded)
        config = get_model_config(name)
        crop, interpolation = evaluation_defaults(None)
        return ModelSource(name, weights, classes or 1000, image_size or config.default_size,
                           normalization or preprocessing_mode(name), crop, interpolation)
    arch = weights.partition(".")[0] if weights in PRESETS else None
    name = _registry_name(model or arch or DEFAULT_MODEL)
    config = get_model_config(name)
    try:
        release = release_of(weights, config)
    except ValueError as e:
        raise cli.UsageError(f"--weights: {e}") from None
    if release is None and weights == "imagenet":
        raise cli.UsageError(f"--weights=imagenet: no public ImageNet weights exist for "
                             f"{name}; models with weights: {', '.join(models_with_weights())}")
    if release is None:
        raise cli.UsageError(f"--weights: {not_a_weights_file(weights)} (expected 'imagenet', "
                             "'architecture.tag', a weights file or a training run's folder)")
    preset = get_preset(release)
    return ModelSource(name, weights, 1000, image_size or config.default_size,
                       normalization or preset.preprocessing, preset.crop_fraction,
                       preset.interpolation)
