"""summary.json and summary.csv of an `AttentionResult`.

Each item (every image, every class, everything) gets, per unit and per scale, the mean
attention difference (mean over channels of a[larger] − a[smaller]) and each branch's mean
attention. summary.json also holds every setting of the run, and attention.npz the raw
per-image arrays for notebooks.
"""

import csv
import json
import os

import numpy as np

from sknet_keras.analysis.attention import branch_label, receptive_field
from sknet_keras.atomic_files import atomic_open, atomic_path


def scale_key(scale):
    return str(float(scale))


def _unit_stats(result, means):
    """{unit: {scale: {difference, branch_means}}} from {unit: (S, M)} means of one item."""
    larger, smaller = result.compare
    return {unit: {scale_key(s): {"difference": float(m[larger] - m[smaller]),
                                  "branch_means": [float(x) for x in m]}
                   for s, m in zip(result.scales, means[unit])}
            for unit in result.units}


def _branches(result):
    return {unit: [{"kernel": k, "dilation": d, "groups": g,
                    "receptive_field": receptive_field((k, d)), "label": branch_label((k, d))}
                   for k, d, g in branches]
            for unit, branches in result.branches.items()}


def summary(result, settings=None, per_image=True):
    """The summary as a JSON-ready dict: settings, branches, overall, classes, images."""
    larger, smaller = result.compare
    first = result.branches[result.units[0]]
    out = {
        "settings": dict(settings or {}, scales=result.scales, units=result.units,
                         channel_unit=result.channel_unit),
        "difference": {"larger_branch": larger, "smaller_branch": smaller,
                       "definition": f"mean over channels of a[{branch_label(first[larger])}]"
                                     f" - a[{branch_label(first[smaller])}]"},
        "branches": _branches(result),
        "overall": {"images": len(result.names),
                    "units": _unit_stats(result, {u: result.means[u].mean(1)
                                                  for u in result.units})},
    }
    if result.class_names:
        counts = result.class_counts()
        per_class = {u: result.per_class(result.means[u]) for u in result.units}
        out["classes"] = [
            {"label": k, "name": name, "images": int(counts[k]),
             "units": _unit_stats(result, {u: per_class[u][:, k] for u in result.units})}
            for k, name in enumerate(result.class_names) if counts[k]]
    if per_image:
        out["images"] = [
            {"name": name, "label": int(label),
             "class": result.class_names[label] if label >= 0 else None,
             "units": _unit_stats(result, {u: result.means[u][:, i] for u in result.units})}
            for i, (name, label) in enumerate(zip(result.names, result.labels))]
    return out


def csv_rows(summary_dict):
    """Flat rows (level, item, label, images, unit, scale, difference, mean_branch<m>...)."""
    items = [("overall", "all", "", summary_dict["overall"]["images"],
              summary_dict["overall"]["units"])]
    items += [("class", c["name"], c["label"], c["images"], c["units"])
              for c in summary_dict.get("classes", [])]
    items += [("image", i["name"], i["label"], 1, i["units"])
              for i in summary_dict.get("images", [])]
    width = max(len(b) for b in summary_dict["branches"].values())
    header = ["level", "item", "label", "images", "unit", "scale", "difference"] + [
        f"mean_branch{m}" for m in range(width)]
    rows = [header]
    for level, item, label, count, units in items:
        for unit, scales in units.items():
            for scale, stats in scales.items():
                means = stats["branch_means"] + [""] * (width - len(stats["branch_means"]))
                rows.append([level, item, label, count, unit, scale, stats["difference"]]
                            + means)
    return rows


def write(result, output_dir, settings=None, per_image=True):
    """summary.json, summary.csv and attention.npz in `output_dir`; returns the summary."""
    os.makedirs(output_dir, exist_ok=True)
    data = summary(result, settings, per_image)
    with atomic_open(os.path.join(output_dir, "summary.json")) as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    with atomic_open(os.path.join(output_dir, "summary.csv"), newline="") as f:
        csv.writer(f).writerows(csv_rows(data))
    arrays = {f"means/{u}": result.means[u] for u in result.units}
    if result.channels is not None:
        arrays[f"channels/{result.channel_unit}"] = result.channels
    with atomic_path(os.path.join(output_dir, "attention.npz")) as tmp:
        np.savez_compressed(tmp, labels=result.labels, names=np.array(result.names),
                            scales=np.array(result.scales), **arrays)
    return data
