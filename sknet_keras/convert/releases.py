"""A release file (timm, torchvision, the official Caffe releases) to Keras weights.

`read_source` + `source_to_keras` are pure functions from a source file to
{Keras weight path: array}. Everything read is checked before anything is written: missing,
unexpected and mis-shaped tensors are listed in one ValueError, and an output file appears
only when complete.
"""

import os

from sknet_keras.convert.caffe import caffe_mapping, caffemodel_tensors
from sknet_keras.convert.common import listing
from sknet_keras.convert.timm import read_timm_checkpoint, timm_mapping
from sknet_keras.convert.torchvision import read_torchvision_checkpoint, torchvision_mapping
from sknet_keras.registry import get_model_config

SOURCES = {
    "timm": (read_timm_checkpoint, timm_mapping),
    "caffe": (caffemodel_tensors, caffe_mapping),
    "torchvision": (read_torchvision_checkpoint, torchvision_mapping),
}


def _check_source(source):
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(SOURCES)}")


def read_source(source, path):
    """{source key: array} of a release file."""
    _check_source(source)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"input file not found: {path!r}")
    return SOURCES[source][0](path)


def source_to_keras(source, model, tensors, origin="<tensors>"):
    """Map source tensors {key: array} to {Keras weight path: array} for a registry model."""
    _check_source(source)
    config = get_model_config(model)
    mapping = SOURCES[source][1](config, include_top=True)
    wanted = {key for key, _ in mapping.values()}
    missing = sorted(wanted - set(tensors))
    unexpected = sorted(set(tensors) - wanted)
    if missing or unexpected:
        lines = [f"{origin!r} does not hold a {source} {config.name} checkpoint:"]
        if missing:
            lines.append(listing("missing", missing))
        if unexpected:
            lines.append(listing("unexpected", unexpected))
        raise ValueError("\n".join(lines))
    return {path: (fn(tensors[key]) if fn else tensors[key]) for path, (key, fn) in mapping.items()}


def convert_file(source, model, path):
    """{Keras weight path: array} of a `source` release file for a registry model."""
    return source_to_keras(source, model, read_source(source, path), os.fspath(path))


def convert(source, model, input_path, output_path=None):
    """Read a `source` ("timm" | "caffe") checkpoint into a Keras model (built once, which
    checks every shape); optionally save it. Returns the model, its classifier sized from
    the checkpoint."""
    import keras

    from sknet_keras.models.network import build_network
    from sknet_keras.weights.files import assign_checked, save_weights

    config = get_model_config(model)
    weights = convert_file(source, config, input_path)
    classes = weights["predictions/bias"].shape[0]
    size = config.default_size
    keras_model = build_network(config, keras.Input((size, size, 3)), classes=classes)
    assign_checked(keras_model, weights, os.fspath(input_path))
    if output_path is not None:
        save_weights(keras_model, output_path, config=config, source=source,
                     source_file=os.path.basename(os.fspath(input_path)))
    return keras_model


__all__ = ["convert", "convert_file", "read_source", "source_to_keras", "SOURCES"]
