"""Run images at several scales through a model and keep what the paper plots.

Per image, per SK unit, per scale: the mean attention of each branch (the mean over
channels). For one chosen unit also the per-channel attention of the larger branch (Fig. 3
left). Every average the figures show — per class, over everything — is derived from these
per-image numbers, so they are computed in one place (`AttentionResult`).
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from sknet_keras.analysis.attention import (attention_model, branch_means, default_branches,
                                            sk_units)
from sknet_keras.analysis.enlarge import check_scales, network_inputs
from sknet_keras.trainers.pipeline import decode_each


@dataclasses.dataclass
class AttentionResult:
    """Per-image attention statistics of a set of images at several scales.

    means[unit]: (scales, images, M) mean attention of each branch; channels: (scales,
    images, C) attention of the larger branch of `channel_unit`, per channel. The compared
    branches are `compare` = (larger, smaller).
    """

    units: list
    branches: dict  # unit → ((kernel, dilation, groups), ...)
    compare: tuple
    scales: list
    names: list
    labels: np.ndarray
    class_names: list
    means: dict
    channel_unit: str = None
    channels: np.ndarray = None

    def difference(self, unit):
        """(scales, images): mean over channels of a[larger] − a[smaller]."""
        larger, smaller = self.compare
        return self.means[unit][..., larger] - self.means[unit][..., smaller]

    def class_counts(self):
        return np.bincount(self.labels[self.labels >= 0], minlength=len(self.class_names))

    def per_class(self, values):
        """(scales, images, ...) → (scales, classes, ...) mean over each class's images
        (NaN for a class without images)."""
        counts = self.class_counts()
        out = np.zeros(values.shape[:1] + (len(self.class_names),) + values.shape[2:])
        keep = self.labels >= 0
        np.add.at(out, (slice(None), self.labels[keep]), values[:, keep])
        with np.errstate(invalid="ignore", divide="ignore"):
            shape = (1, -1) + (1,) * (values.ndim - 2)
            return out / counts.reshape(shape)


def resolve_units(model, units=None, compare=None, channel_unit=None):
    """(units, {unit: branches}, (larger, smaller), channel unit) after checking the
    names and branch indices against the model."""
    available = sk_units(model)
    if not available:
        raise ValueError(f"model {model.name!r} has no SK units (SelectiveKernel layers "
                         "exposing their attention): nothing to analyse")
    units = list(available) if not units else list(units)
    unknown = [u for u in units if u not in available]
    if unknown:
        raise ValueError(f"--units: unknown SK unit(s) {', '.join(unknown)}; {model.name} "
                         f"has {', '.join(available)}")
    branches = {u: available[u].branches for u in units}
    m = min(len(b) for b in branches.values())
    compare = tuple(compare) if compare else default_branches(branches[units[0]])
    if len(compare) != 2 or compare[0] == compare[1] or not all(0 <= c < m for c in compare):
        raise ValueError(f"--branches: two different branch indices in 0..{m - 1} "
                         f"(larger,smaller); got {','.join(str(c) for c in compare)}")
    if channel_unit is not None and channel_unit not in units:
        raise ValueError(f"--channel_unit: {channel_unit} is not among the analysed units "
                         f"({', '.join(units)})")
    return units, branches, compare, channel_unit


def batches(source, scales, image_size, batch_size, crop_fraction=0.875, method="bicubic",
            normalization="torch"):
    """Batches of (images (B, S, size, size, 3), labels, names) from a `Source`; an image
    that cannot be read is named on stderr and skipped, as in the trainer."""
    def prepare(encoded, label, name):
        return (network_inputs(encoded, scales, image_size, crop_fraction, method,
                               normalization), label, name)

    placeholder = (tf.zeros([len(scales), image_size, image_size, 3]),
                   tf.constant(-1, tf.int64), tf.constant(""))
    ds = decode_each(source.records, prepare, placeholder)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def collect(model, source, scales, image_size, batch_size=32, units=None, compare=None,
            channel_unit=None, crop_fraction=0.875, method="bicubic", normalization="torch",
            verbose=1):
    """An `AttentionResult` of `model` on every image of `source` at every scale."""
    scales = check_scales(scales)
    units, branches, compare, channel_unit = resolve_units(model, units, compare, channel_unit)
    reader = attention_model(model, units)
    means = {u: [] for u in units}
    channels, labels, names = [], [], []
    bar = keras.utils.Progbar(source.examples, stateful_metrics=["img/s"], verbose=verbose)
    seen, start = 0, time.perf_counter()
    for images, batch_labels, batch_names in batches(source, scales, image_size, batch_size,
                                                     crop_fraction, method, normalization):
        images = images.numpy()
        n, s = images.shape[:2]
        attention = reader.predict_on_batch(images.reshape((n * s,) + images.shape[2:]))
        for unit in units:
            a = np.asarray(attention[unit]).reshape((n, s) + attention[unit].shape[1:])
            means[unit].append(branch_means(a).transpose(1, 0, 2))
            if unit == channel_unit:
                channels.append(a[:, :, compare[0]].transpose(1, 0, 2))
        labels.append(batch_labels.numpy())
        names += [x.decode() for x in batch_names.numpy()]
        seen += n
        bar.update(seen, [("img/s", seen / (time.perf_counter() - start))])
    if not seen:
        raise ValueError(f"no image could be read from {source.description}")
    if seen < source.examples and verbose:
        print(f"skipped {source.examples - seen} unreadable image(s) (named above)")
    return AttentionResult(
        units, branches, compare, scales, names, np.concatenate(labels).astype(np.int64),
        list(source.class_names), {u: np.concatenate(v, 1) for u, v in means.items()},
        channel_unit, np.concatenate(channels, 1) if channels else None)
