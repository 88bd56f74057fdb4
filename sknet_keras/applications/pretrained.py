"""`weights="imagenet"`: fetch a public release once, convert it once, cache the result.

Look-up order for the source file: `$SKNET_KERAS_WEIGHTS_DIR/<file>`, the Keras cache
(`$KERAS_HOME/models/sknet_keras/<file>`, default `~/.keras`), then a download with
`keras.utils.get_file`. Offline or on a failed download the error says which file to fetch
and where to put it.
"""

import os

from sknet_keras.registry import MODELS, get_model_config

WEIGHTS_DIR_ENV = "SKNET_KERAS_WEIGHTS_DIR"


def cache_dir():
    root = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(root, "models", "sknet_keras")


def models_with_weights():
    return sorted(name for name, c in MODELS.items() if c.pretrained is not None)


def _source_file(config):
    p = config.pretrained
    candidates = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        candidates.append(os.path.join(os.environ[WEIGHTS_DIR_ENV], p.file_name))
    cached = os.path.join(cache_dir(), p.file_name)
    candidates.append(cached)
    for path in candidates:
        if os.path.isfile(path):
            return path
    where = (f"put it at {cached!r}, or in a folder named by ${WEIGHTS_DIR_ENV}")
    if p.url is None:
        page = f" (from {p.page})" if p.page else ""
        raise ValueError(
            f"ImageNet weights for {config.name!r} come from {p.file_name!r} ({p.source} "
            f"release), which has no direct download: fetch it by hand{page} and {where}."
        )
    import keras

    try:
        root = os.path.dirname(os.path.dirname(cache_dir()))
        return keras.utils.get_file(p.file_name, origin=p.url, cache_dir=root,
                                    cache_subdir=os.path.join("models", "sknet_keras"),
                                    file_hash=p.sha256)
    except Exception as e:  # get_file raises several types for network errors
        raise ValueError(
            f"could not download the ImageNet weights of {config.name!r} from {p.url} "
            f"({type(e).__name__}: {e}). Download {p.file_name!r} by hand and {where}."
        ) from None


def imagenet_weights(model):
    """Path of the converted ImageNet weights of a registry model (converting on first use)."""
    config = get_model_config(model)
    if config.pretrained is None:
        raise ValueError(
            f"no public ImageNet weights exist for {config.name!r}; models with weights: "
            f"{', '.join(models_with_weights())}"
        )
    p = config.pretrained
    stem = p.file_name.rsplit(".", 1)[0]
    converted = os.path.join(cache_dir(), f"{config.name}.{stem}.h5")
    if os.path.isfile(converted):
        return converted
    source = _source_file(config)
    from sknet_keras.convert import convert

    os.makedirs(cache_dir(), exist_ok=True)
    convert(p.source, config, source, converted)
    return converted
