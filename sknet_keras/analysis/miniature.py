"""A miniature, offline version of the paper's experiment: objects of controlled size.

`write_dataset` draws an image-folder dataset (train/ and validation/) of four shape
classes — square, disk, ring, cross — of random colour, centred (± a few pixels) on a noisy
background, their size drawn uniformly from `sizes`; a validation file's name records its
object's size (`0007_s23.png`). Train a small SKNet on it with the trainer, run the
analysis, then `size_table` relates each image's attention difference to its object size:
the enlargement experiment without enlargement. docs/analysis.md has the exact commands.

    python -m sknet_keras.analysis.miniature --data_dir=DIR          # write the dataset
    python -m sknet_keras.analysis.miniature --summary=OUT/summary.json  # sizes vs attention
"""

import os
import re

import numpy as np

CLASSES = ("square", "disk", "ring", "cross")
_SIZE = re.compile(r"_s(\d+)\.png$")


def _mask(shape, size, image_size, centre):
    """Boolean (image_size, image_size) mask of a `shape` of side / diameter `size`."""
    y, x = np.mgrid[:image_size, :image_size] + 0.5
    dy, dx = y - centre[0], x - centre[1]
    half = size / 2
    if shape == "square":
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    radius = np.hypot(dy, dx)
    if shape == "disk":
        return radius <= half
    if shape == "ring":
        return (radius <= half) & (radius >= half * 0.6)
    if shape == "cross":
        arm = max(1.0, size / 8)
        return ((np.abs(dy) <= half) & (np.abs(dx) <= arm)) | (
            (np.abs(dx) <= half) & (np.abs(dy) <= arm))
    raise ValueError(f"unknown shape {shape!r}; expected one of {CLASSES}")


def draw(shape, size, rng, image_size=64, jitter=4, noise=24.0):
    """One uint8 (image_size, image_size, 3) image: a `shape` of `size` pixels, centred ±
    `jitter`, in a random colour on a noisy background of another random colour."""
    centre = image_size / 2 + rng.uniform(-jitter, jitter, 2)
    background = rng.uniform(40, 215, 3)
    colour = (background + rng.choice([-1, 1], 3) * rng.uniform(50, 90, 3)).clip(0, 255)
    image = np.broadcast_to(background, (image_size, image_size, 3)).copy()
    image[_mask(shape, size, image_size, centre)] = colour
    image += rng.normal(0.0, noise, image.shape)
    return image.clip(0, 255).round().astype(np.uint8)


def write_dataset(root, train_per_class=600, validation_per_class=100, image_size=64,
                  sizes=(10, 44), seed=0):
    """root/{train,validation}/<class>/*.png; returns the number of images written."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    count = 0
    for split, per_class in (("train", train_per_class), ("validation", validation_per_class)):
        for shape in CLASSES:
            folder = os.path.join(root, split, shape)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                size = int(rng.integers(sizes[0], sizes[1] + 1))
                image = draw(shape, size, rng, image_size)
                path = os.path.join(folder, f"{i:04d}_s{size:02d}.png")
                tf.io.write_file(path, tf.io.encode_png(image))
                count += 1
    return count


def size_table(summary, bins=4):
    """{unit: [(size range, images, {scale: mean difference})]}: each image's attention
    difference averaged over object-size bins (per-image summary of the validation set)."""
    images = [i for i in summary.get("images", []) if _SIZE.search(i["name"])]
    if not images:
        raise ValueError("the summary has no per-image results with object sizes in their "
                         "names (_s<size>.png): run the analysis with --per_image on the "
                         "miniature's validation images")
    sizes = np.array([int(_SIZE.search(i["name"]).group(1)) for i in images])
    edges = np.linspace(sizes.min(), sizes.max() + 1, bins + 1)
    which = np.clip(np.digitize(sizes, edges) - 1, 0, bins - 1)
    table = {}
    for unit in summary["settings"]["units"]:
        rows = []
        for b in range(bins):
            members = [img for img, w in zip(images, which) if w == b]
            if not members:
                continue
            means = {s: float(np.mean([m["units"][unit][s]["difference"] for m in members]))
                     for s in members[0]["units"][unit]}
            rows.append((f"{int(np.ceil(edges[b]))}-{int(np.ceil(edges[b + 1])) - 1}",
                         len(members), means))
        table[unit] = rows
    return table


def scale_effects(summary):
    """{unit: {scale: (mean, standard error)}} of each image's change of attention
    difference from the first scale (1.0) to each other: is the change beyond noise?"""
    images = summary.get("images", [])
    if len(images) < 2:
        raise ValueError("scale effects need the per-image results of two or more images "
                         "(run the analysis with --per_image)")
    scales = [str(float(s)) for s in summary["settings"]["scales"]]
    effects = {}
    for unit in summary["settings"]["units"]:
        diffs = np.array([[i["units"][unit][s]["difference"] for s in scales] for i in images])
        change = diffs[:, 1:] - diffs[:, :1]
        effects[unit] = {s: (float(c.mean()), float(c.std(ddof=1) / np.sqrt(len(c))))
                         for s, c in zip(scales[1:], change.T)}
    return effects


def format_size_table(table):
    """The size table as text: one line per unit and size bin."""
    lines = []
    for unit, rows in table.items():
        for size, count, means in rows:
            values = "  ".join(f"{s}x {v:+.4f}" for s, v in means.items())
            lines.append(f"{unit:<8} object {size:>6} px ({count:>4} images): {values}")
    return "\n".join(lines)


def _main():
    """`python -m sknet_keras.analysis.miniature`: write the dataset, or print a size table.
    Flags are defined here, not on import, so importing the module defines none."""
    from sknet_keras import cli
    from absl import flags  # noqa: I001 (cli first: it quiets TensorFlow's start-up)

    flags.DEFINE_string("data_dir", None, "Write the dataset here (train/, validation/).")
    flags.DEFINE_integer("train_per_class", 600, "Training images per class.")
    flags.DEFINE_integer("validation_per_class", 100, "Validation images per class.")
    flags.DEFINE_integer("image_size", 64, "Image side in pixels.")
    flags.DEFINE_list("sizes", ["10", "44"], "Smallest and largest object size in pixels.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_string("summary", None, "Instead: print attention difference per object "
                        "size from an analysis summary.json of the validation images.")
    flags.DEFINE_integer("bins", 4, "Object-size bins of the table.")
    f = flags.FLAGS

    def main(argv):
        del argv
        if (f.data_dir is None) == (f.summary is None):
            raise cli.UsageError("give exactly one of --data_dir and --summary")
        if f.summary:
            import json

            with open(f.summary) as file:
                data = json.load(file)
            print(format_size_table(size_table(data, f.bins)))
            print("change of the attention difference from the first scale (mean ± s.e.):")
            for unit, by_scale in scale_effects(data).items():
                print(f"{unit:<8} " + "  ".join(f"{s}x {m:+.4f} ± {e:.4f}"
                                               for s, (m, e) in by_scale.items()))
            return
        low, high = (int(s) for s in f.sizes)
        if not 1 <= low <= high <= f.image_size:
            raise cli.UsageError(f"--sizes: 1 <= smallest <= largest <= --image_size; got "
                                 f"{low},{high}")
        n = write_dataset(f.data_dir, f.train_per_class, f.validation_per_class,
                          f.image_size, (low, high), f.seed)
        print(f"wrote {n} images of {', '.join(CLASSES)} to {f.data_dir}")

    cli.run(main, "sknet_keras.analysis.miniature")


if __name__ == "__main__":
    _main()
