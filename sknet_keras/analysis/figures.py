"""The paper's attention figures (SKNet Figs. 2–4) from plain arrays.

Each function takes NumPy arrays, so a notebook can plot its own numbers, and returns the
matplotlib Figure, or writes a PNG when given `path` (and returns the path). Figures are
drawn on the Agg canvas without pyplot: no global backend is switched, nothing stays open.
"""

import os

import numpy as np

from sknet_keras.analysis.attention import branch_label, default_class_units
from sknet_keras.extras import require

FigureCanvasAgg = require("matplotlib.backends.backend_agg", "the analysis figures").FigureCanvasAgg
Figure = require("matplotlib.figure", "the analysis figures").Figure

DPI = 100
WIDTH = 8.0  # inches: 800 px
HEIGHT = 4.5  # one panel: 450 px
CLASS_PANEL_HEIGHT = 2.5  # per unit in the per-class figure: 250 px


def _figure(height=HEIGHT):
    figure = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _finish(figure, path):
    if path is None:
        return figure
    from sknet_keras.atomic_files import atomic_path

    with atomic_path(path) as tmp:  # keeps the suffix, which names the format
        figure.savefig(tmp, dpi=DPI)
    return path


def _scale_label(scale):
    """1.0x, 1.5x, 1.25x: the paper's legend."""
    text = f"{float(scale):g}"
    return f"{text}.0x" if "." not in text and "e" not in text else f"{text}x"


def unit_curves(units, differences, scales, difference_label="5x5 - 3x3", title=None,
                path=None):
    """Fig. 3 (right): mean attention difference of every unit (x), one curve per scale.

    differences: (scales, units).
    """
    differences = np.asarray(differences, np.float64)
    figure = _figure()
    ax = figure.add_subplot()
    x = np.arange(len(units))
    for scale, row in zip(scales, differences):
        ax.plot(x, row, marker="o", label=_scale_label(scale))
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_xticks(x, units, rotation=45 if len(units) > 8 else 0, ha="right"
                  if len(units) > 8 else "center")
    ax.set_xlabel("SK unit")
    ax.set_ylabel(f"mean attention difference\n({difference_label})")
    ax.set_title(title or "Attention difference per SK unit")
    ax.legend(title="object scale")
    ax.grid(alpha=0.3)
    return _finish(figure, path)


def channel_curves(attention, scales, unit, branch="5x5", title=None, path=None):
    """Fig. 3 (left): attention of one branch of `unit` per channel (x), one curve per
    scale. attention: (scales, channels)."""
    attention = np.asarray(attention, np.float64)
    figure = _figure()
    ax = figure.add_subplot()
    for scale, row in zip(scales, attention):
        ax.plot(np.arange(len(row)), row, linewidth=1.0, label=_scale_label(scale))
    ax.set_xlabel(f"channel index of {unit}")
    ax.set_ylabel(f"attention of the {branch} branch")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title or f"{unit}: attention per channel")
    ax.legend(title="object scale")
    ax.grid(alpha=0.3)
    return _finish(figure, path)


def class_curves(differences, scales, difference_label="5x5 - 3x3", class_names=None,
                 title=None, path=None):
    """Figs. 2 and 4: per-class mean attention difference (x: class index), one panel per
    unit, one curve per scale. differences: {unit: (scales, classes)}; NaN = no images.
    Up to 20 `class_names` label the x axis; more are left as indices."""
    figure = _figure(CLASS_PANEL_HEIGHT * len(differences))
    axes = figure.subplots(len(differences), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (unit, values) in zip(axes, differences.items()):
        values = np.asarray(values, np.float64)
        marker = "o" if values.shape[1] <= 50 else None
        for scale, row in zip(scales, values):
            ax.plot(np.arange(len(row)), row, marker=marker, markersize=3, linewidth=0.8,
                    label=_scale_label(scale))
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        ax.set_ylabel(f"{unit}\n({difference_label})")
        ax.grid(alpha=0.3)
    axes[0].legend(title="object scale", ncols=len(scales))
    axes[0].set_title(title or "Mean attention difference per class")
    if class_names is not None and len(class_names) <= 20:
        axes[-1].set_xticks(np.arange(len(class_names)), class_names,
                            rotation=45 if len(class_names) > 6 else 0)
        axes[-1].set_xlabel("class")
    else:
        axes[-1].xaxis.get_major_locator().set_params(integer=True)
        axes[-1].set_xlabel("class index")
    return _finish(figure, path)


def write_figures(result, output_dir, class_units=None, figure_images=3, prefix=""):
    """The paper's figures of an `AttentionResult` as PNGs in `output_dir`; their paths.

    units.png and channels_<unit>.png average over every image; units_image<i>.png and
    channels_<unit>_image<i>.png show the first `figure_images` images alone (Fig. 3);
    classes.png the per-class curves of `class_units` (Figs. 2, 4) when there are classes.
    """
    os.makedirs(output_dir, exist_ok=True)
    first = result.branches[result.units[0]]
    larger, smaller = (branch_label(first[i]) for i in result.compare)
    label = f"{larger} - {smaller}"
    differences = np.stack([result.difference(u) for u in result.units], -1)  # (S, N, U)
    path = os.path.join(output_dir, prefix + "{}.png")
    n = len(result.names)
    paths = [unit_curves(result.units, differences.mean(1), result.scales, label,
                         f"Attention difference per SK unit, mean of {n} images",
                         path.format("units"))]
    shown = min(figure_images, n)
    for i in range(shown):
        paths.append(unit_curves(result.units, differences[:, i], result.scales, label,
                                 f"Attention difference per SK unit: {result.names[i]}",
                                 path.format(f"units_image{i}")))
    if result.channel_unit is not None:
        unit = result.channel_unit
        paths.append(channel_curves(result.channels.mean(1), result.scales, unit, larger,
                                    f"{unit}: {larger} attention per channel, mean of {n} "
                                    "images", path.format(f"channels_{unit}")))
        for i in range(shown):
            paths.append(channel_curves(result.channels[:, i], result.scales, unit, larger,
                                        f"{unit}: {larger} attention per channel: "
                                        f"{result.names[i]}",
                                        path.format(f"channels_{unit}_image{i}")))
    if len(result.class_names) > 1 and result.class_counts().any():
        units = list(class_units or default_class_units(result.units))
        per_class = {u: result.per_class(result.difference(u)) for u in units}
        paths.append(class_curves(per_class, result.scales, label, result.class_names,
                                  f"Mean attention difference per class ({n} images)",
                                  path.format("classes")))
    return paths
