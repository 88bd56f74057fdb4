"""`weights="imagenet"`: fetch a public release once, convert it once, cache the result.

Look-up order for the release file: `$SKNET_KERAS_WEIGHTS_DIR/<file>`, the Keras cache
(`$KERAS_HOME/models/sknet_keras/<file>`, default `~/.keras`), then a download (resumable,
retried, checked against the published hash; `download.py`). Offline, or on a failed
download, the error says which URL to fetch, the file name to save it as, and where.
"""

import os

from sknet_keras import file_lock, presets
from sknet_keras.convert import convert_file
from sknet_keras.registry import get_model_config
from sknet_keras.weights.download import DownloadError, download, verify
from sknet_keras.weights.files import (assign_checked, load_weights, read_weights,
                                       write_tensors)

WEIGHTS_DIR_ENV = "SKNET_KERAS_WEIGHTS_DIR"


def cache_dir():
    root = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(root, "models", "sknet_keras")


def _preset(name, release=None):
    """(config, Preset) of `name`'s default release, or of `release` ("architecture.tag")."""
    config = get_model_config(name)
    preset = presets.PRESETS[release] if release else presets.get_preset(config.name)
    if preset is None:
        raise ValueError(
            f"no public ImageNet weights exist for {config.name!r}; models with weights: "
            f"{', '.join(presets.models_with_weights())}")
    return config, preset


def _where(preset):
    """(where a download goes, where to put the file by hand)."""
    cached = os.path.join(cache_dir(), preset.file_name)
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if folder:
        return cached, (f"save it as {os.path.join(folder, preset.file_name)!r} (the folder "
                        f"${WEIGHTS_DIR_ENV} names)")
    return cached, f"save it as {cached!r}, or in a folder named by ${WEIGHTS_DIR_ENV}"


def _manual_instructions(preset):
    cached, where = _where(preset)
    lines = []
    if preset.url:
        lines.append(f"download {preset.url} and {where}")
    for file_name, url in preset.also_accepted:
        lines.append(f"or download {url} and save it, renamed, as {file_name!r} in the same "
                     "folder")
    return "; ".join(lines)


def source_file(name, release=None):
    """Path of the release file behind a model's ImageNet weights (downloading it if need
    be)."""
    config, preset = _preset(name, release)
    folders = [os.environ[WEIGHTS_DIR_ENV]] if os.environ.get(WEIGHTS_DIR_ENV) else []
    folders.append(cache_dir())
    for folder in folders:
        for file_name in (preset.file_name,) + tuple(f for f, _ in preset.also_accepted):
            path = os.path.join(folder, file_name)
            if os.path.isfile(path):
                if file_name == preset.file_name:
                    problem = verify(path, preset.sha256, preset.sha384, preset.size,
                                     preset.size_tolerance)
                    if problem:
                        raise ValueError(f"{path} is not the published {preset.file_name}: "
                                         f"{problem}. Replace it with the published file "
                                         f"({preset.url or preset.page}).")
                return path
    cached, where = _where(preset)
    if preset.url is None:
        raise ValueError(
            f"ImageNet weights for {config.name!r} come from {preset.file_name!r}, which has no "
            f"direct download: fetch it by hand from {preset.page} and {where}.")
    try:
        return download(preset.url, cached, preset.sha256, preset.sha384, preset.size,
                        size_tolerance=preset.size_tolerance)
    except DownloadError as e:
        raise ValueError(f"could not download the ImageNet weights of {config.name!r} ({e}). "
                         f"By hand: {_manual_instructions(preset)}.") from None


def converted_path(name, release=None):
    config, preset = _preset(name, release)
    stem = preset.file_name.split(".")[0]
    return os.path.join(cache_dir(), f"{config.name}.{stem}.h5")


def load_imagenet_weights(model, name, skip=(), release=None):
    """Load a registry model's ImageNet weights into `model` (converting on first use): its
    default release, or `release` ("architecture.tag", a key of `presets.PRESETS`).

    The release file is converted straight into `model` (its shapes checked as it is
    assigned), and only then cached as a converted file for the next time. Variables under
    a prefix in `skip` keep their values (fine-tuning: `skip=("predictions/",)`).
    """
    config, preset = _preset(name, release)
    converted = converted_path(config.name, release)
    if not os.path.isfile(converted):
        os.makedirs(cache_dir(), exist_ok=True)
        # One process converts; the others wait and read its file (file_lock).
        with file_lock.hold(converted + ".lock", f"converting {preset.file_name}"):
            if not os.path.isfile(converted):
                source = source_file(config.name, release)
                tensors = convert_file(preset.source, config, source)
                assign_checked(model, tensors, source, skip=skip)
                write_tensors(converted, tensors, config.name, source=preset.source,
                              source_file=os.path.basename(source))
                return model
    if skip:
        tensors, _ = read_weights(converted)
        assign_checked(model, tensors, converted, skip=skip)
        return model
    return load_weights(model, converted)
