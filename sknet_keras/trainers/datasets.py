"""Datasets by name: tensorflow-datasets builders, an image folder, and bundled digits.

Any tfds image-classification dataset by its tfds name (`imagenet2012`, `cifar10`,
`oxford_flowers102`, ...: an `image` and a `label` feature), `image_folder` (tfds ImageFolder:
`data_dir/train/<class>/*`, `data_dir/validation/<class>/*`) and `digits` (scikit-learn's
bundled 8×8 digits, upsampled; needs no download, for the default run). Nothing is downloaded
at run time: a dataset that is not prepared fails at once saying what to fetch.
"""

import dataclasses
import difflib
import os

import numpy as np
import tensorflow as tf

from sknet_keras.extras import require
from sknet_keras.trainers.configs import DATASET_HELP, DATASETS

# Where `tfds build` fetches what a dataset is made from, for the not-prepared message.
SOURCE_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
}


@dataclasses.dataclass
class DataSpec:
    """What the trainer needs to know about a dataset."""

    name: str
    num_classes: int
    train_examples: int
    eval_examples: int
    train_split: str
    eval_split: str
    builder: object = None  # tfds builder, or None for in-memory data
    arrays: dict = None  # split -> (PNG-encoded images, labels) for in-memory data

    def examples(self, split):
        return self.train_examples if split == self.train_split else self.eval_examples


class DataError(ValueError):
    """A dataset that cannot be read, with what to do about it."""


def _tfds():
    return require("tensorflow_datasets", "reading tfds datasets")


def _digits_arrays(seed=0):
    digits = require("sklearn.datasets", "the bundled digits dataset").load_digits()
    images = (digits.images / 16.0 * 255).astype("uint8")[..., None].repeat(3, -1)
    labels = digits.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
    # Encoded once here, not per epoch: the pipeline then treats them like files on disk.
    encoded = np.array([tf.io.encode_png(img).numpy() for img in images], dtype=object)
    cut = int(len(labels) * 0.8)
    return {"train": (encoded[:cut], labels[:cut]), "test": (encoded[cut:], labels[cut:])}


def _image_folder(data_dir):
    tfds = _tfds()
    train = os.path.join(data_dir or "", "train")
    if not data_dir or not os.path.isdir(train):
        raise DataError(f"--dataset=image_folder needs --data_dir holding train/<class>/* "
                        f"(and validation/<class>/*); got --data_dir={data_dir!r}")
    classes = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))
    if len(classes) < 2:
        raise DataError(f"image_folder needs at least two classes (sub-folders of {train}); "
                        f"found {len(classes)}{': ' + classes[0] if classes else ''}")
    for split in ("validation", "test"):
        folder = os.path.join(data_dir, split)
        if os.path.isdir(folder):
            extra = sorted(d for d in os.listdir(folder)
                           if os.path.isdir(os.path.join(folder, d)) and d not in classes)
            if extra:
                raise DataError(f"{folder} has class folder(s) that {train} lacks: "
                                f"{', '.join(extra)} (a class the model never trains on)")
    builder = tfds.ImageFolder(data_dir)
    splits = builder.info.splits
    if not splits["train"].num_examples:
        raise DataError(f"no images found in {train}/<class>/ (expected .jpg, .jpeg or .png)")
    eval_split = "validation" if "validation" in splits else (
        "test" if "test" in splits else "train")
    if eval_split == "train":
        print(f"note: {data_dir} has no validation/ (or test/) folder: the evaluation uses "
              "the training images")
    return DataSpec("image_folder", builder.info.features["label"].num_classes,
                    splits["train"].num_examples, splits[eval_split].num_examples,
                    "train", eval_split, builder=builder)


def _digits(data_dir):
    del data_dir  # bundled with scikit-learn
    arrays = _digits_arrays()
    return DataSpec("digits", 10, len(arrays["train"][1]), len(arrays["test"][1]),
                    "train", "test", arrays=arrays)


# The datasets that are not tfds datasets by name; every other name is one (`_tfds_spec`).
_OTHER_SOURCES = {"digits": _digits, "image_folder": _image_folder}


def load_spec(name, data_dir=None):
    """Open a dataset; fail fast (no 200 s of download retries) when it is not there."""
    if name in _OTHER_SOURCES:
        return _OTHER_SOURCES[name](data_dir)
    return _tfds_spec(name, data_dir)


def _tfds_spec(name, data_dir):
    tfds = _tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(name, list(DATASETS) + tfds.list_builders(with_community_datasets=False), n=2)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise DataError(f"--dataset: no dataset {name!r} in tfds{hint}; expected "
                        f"{DATASET_HELP}") from None
    if not builder.is_prepared():
        where = builder.data_dir
        if name == "imagenet2012":
            manual = os.path.join(data_dir or "~/tensorflow_datasets", "downloads", "manual")
            raise DataError(
                f"imagenet2012 is not prepared in {where}. Put ILSVRC2012_img_train.tar and "
                f"ILSVRC2012_img_val.tar (from image-net.org) in {manual} and run "
                f"`tfds build imagenet2012 --data_dir={data_dir or '~/tensorflow_datasets'}`, "
                "or prepare_imagenet(data_dir, manual_dir) from sknet_keras.trainers.datasets.")
        fetches = f" (it fetches {SOURCE_URLS[name]})" if name in SOURCE_URLS else ""
        raise DataError(
            f"{name} is not prepared in {where} and is not downloaded at run time (no network "
            f"retries). On a machine with network run `tfds build {name} "
            f"--data_dir=DATA_DIR`{fetches} and copy DATA_DIR/{builder.name} "
            f"into {data_dir or '~/tensorflow_datasets'}.")
    features = builder.info.features
    found = dict(features.items()) if isinstance(features, tfds.features.FeaturesDict) else {}
    if not (isinstance(found.get("image"), tfds.features.Image)
            and isinstance(found.get("label"), tfds.features.ClassLabel)):
        found = sorted(found) or type(features).__name__
        raise DataError(f"{name} is not an image-classification dataset: the trainer reads "
                        f"an 'image' (Image) and a 'label' (ClassLabel) feature; it has {found}")
    splits = builder.info.splits
    if "train" not in splits:
        raise DataError(f"{name} has no 'train' split (its splits: {', '.join(splits)})")
    eval_split = next((s for s in ("validation", "test") if s in splits), "train")
    return DataSpec(name, builder.info.features["label"].num_classes,
                    splits["train"].num_examples, splits[eval_split].num_examples,
                    "train", eval_split, builder=builder)


def prepare_imagenet(data_dir, manual_dir):
    """Prepare tfds imagenet2012 from ILSVRC2012_img_{train,val}.tar in `manual_dir`."""
    tfds = _tfds()
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def records(spec, split, shuffle_files, seed):
    """(encoded image, label, file name) records of a split."""
    if spec.arrays is not None:
        encoded, labels = spec.arrays[split]
        names = [f"{split}_{i:05d}" for i in range(len(labels))]
        return tf.data.Dataset.from_tensor_slices((encoded, labels, names))
    tfds = _tfds()
    decoders = {"image": tfds.decode.SkipDecoding()}
    ds = spec.builder.as_dataset(split=split, decoders=decoders, shuffle_files=shuffle_files,
                                 read_config=tfds.ReadConfig(shuffle_seed=seed))
    features = spec.builder.info.features
    name_key = next((k for k in ("file_name", "image/filename", "id") if k in features), None)

    def fields(ex):
        name = ex[name_key] if name_key else tf.constant("")
        return ex["image"], ex["label"], name

    return ds.map(fields, num_parallel_calls=tf.data.AUTOTUNE)
