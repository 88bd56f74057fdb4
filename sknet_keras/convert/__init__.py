"""Convert public SKNet / ResNeXt / SE-ResNeXt releases (timm, official Caffe) to Keras.

    from sknet_keras.convert import convert
    convert("timm", "sknet50", "model.safetensors", "sknet50.weights.h5")
    model = SKNet50(weights="sknet50.weights.h5")

Everything read is checked before anything is written: missing, unexpected and mis-shaped
tensors are listed in one ValueError, and the output file appears only when complete.
"""

import os

from sknet_keras.convert.caffe import caffe_mapping, caffemodel_tensors
from sknet_keras.convert.timm import read_timm_checkpoint, timm_mapping
from sknet_keras.registry import get_model_config

SOURCES = {
    "timm": (read_timm_checkpoint, timm_mapping),
    "caffe": (caffemodel_tensors, caffe_mapping),
}


def _listing(title, items, limit=12):
    shown = ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
    return f"  {title} ({len(items)}): {shown}"


def source_to_keras(source, model, tensors, origin="<tensors>"):
    """Map source tensors {key: array} to {Keras weight path: array} for a registry model."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(SOURCES)}")
    config = get_model_config(model)
    mapping = SOURCES[source][1](config, include_top=True)
    wanted = {key for key, _ in mapping.values()}
    missing = sorted(wanted - set(tensors))
    unexpected = sorted(set(tensors) - wanted)
    if missing or unexpected:
        lines = [f"{origin!r} does not hold a {source} {config.name} checkpoint:"]
        if missing:
            lines.append(_listing("missing", missing))
        if unexpected:
            lines.append(_listing("unexpected", unexpected))
        raise ValueError("\n".join(lines))
    return {path: (fn(tensors[key]) if fn else tensors[key]) for path, (key, fn) in mapping.items()}


def convert(source, model, input_path, output_path=None):
    """Read a `source` ("timm" | "caffe") checkpoint into a Keras model; optionally save it.

    Returns the Keras model (with its classifier, sized from the checkpoint).
    """
    from sknet_keras.applications import build_model
    from sknet_keras.applications.weights import assign_checked, save_weights

    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(SOURCES)}")
    input_path = os.fspath(input_path)
    if not os.path.isfile(input_path):
        raise ValueError(f"input file not found: {input_path!r}")
    config = get_model_config(model)
    tensors = SOURCES[source][0](input_path)
    weights = source_to_keras(source, config, tensors, input_path)
    classes = weights["predictions/bias"].shape[0]
    keras_model = build_model(config, classes=classes, classifier_activation="softmax")
    assign_checked(keras_model, weights, input_path)
    if output_path is not None:
        save_weights(keras_model, output_path, source=source,
                     source_file=os.path.basename(input_path))
    return keras_model


__all__ = ["convert", "source_to_keras", "SOURCES"]
