"""Where the analysed images come from: a folder of images, or a dataset of the trainer.

Both give a `Source`: a tf.data dataset of (encoded image, label, name) records, its size,
and the class names (label -1: an image of no class, e.g. a flat folder's).
"""

import dataclasses
import os

import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class Source:
    records: tf.data.Dataset
    examples: int
    class_names: list
    description: str


def _subfolders(folder):
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


def _images_in(folder):
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, f)))


def image_folder(path, max_examples=None):
    """Images in `path`, or in its class sub-folders `path/<class>/*` (labelled by the
    sorted class names); loose images beside class folders have no class."""
    if not path or not os.path.isdir(path):
        raise ValueError(f"--image_dir: {path!r} is not a folder")
    classes = [d for d in _subfolders(path) if _images_in(os.path.join(path, d))]
    files = [(os.path.join(path, f), -1, f) for f in _images_in(path)]
    for label, name in enumerate(classes):
        folder = os.path.join(path, name)
        files += [(os.path.join(folder, f), label, f"{name}/{f}") for f in _images_in(folder)]
    if not files:
        nested = [d for d in _subfolders(path) if any(
            _images_in(os.path.join(path, d, c)) for c in _subfolders(os.path.join(path, d)))]
        if nested:
            raise ValueError(
                f"--image_dir: {path} holds images two folders down ({nested[0]}/<class>/*); "
                f"give --image_dir={os.path.join(path, nested[0])}, or --dataset=image_folder "
                f"--data_dir={path} for a trainer image folder")
        raise ValueError(f"--image_dir: no images ({', '.join(IMAGE_EXTENSIONS)}) in {path} "
                         "or in its sub-folders (one level down)")
    files = files[:max_examples] if max_examples else files
    paths, labels, names = (list(column) for column in zip(*files))
    records = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int64), names))
    records = records.map(lambda p, label, name: (tf.io.read_file(p), label, name))
    return Source(records, len(files), classes, f"image folder {path}")


def _class_names(spec):
    """Readable class names: ImageNet's words, else the dataset's names, else numbers."""
    if spec.name == "imagenet2012":
        from sknet_keras.applications.imagenet_utils import imagenet_class_index

        index = imagenet_class_index()
        return [index[i][1] for i in range(spec.num_classes)]
    feature = spec.builder.info.features["label"] if spec.builder is not None else None
    names = getattr(feature, "names", None)
    return list(names) if names else [str(i) for i in range(spec.num_classes)]


def dataset(name, data_dir=None, split=None, max_examples=None):
    """A split of a trainer dataset (`sknet_keras.trainers.datasets`): tfds or image_folder."""
    from sknet_keras.trainers import datasets

    spec = datasets.load_spec(name, data_dir)
    split = split or spec.eval_split
    splits = (list(spec.arrays) if spec.arrays is not None
              else list(spec.builder.info.splits.keys()))
    if split not in splits:
        raise ValueError(f"--split: {name} has no split {split!r}; it has {', '.join(splits)}")
    records = datasets.records(spec, split, shuffle_files=False, seed=0)
    count = (len(spec.arrays[split][1]) if spec.arrays is not None
             else spec.builder.info.splits[split].num_examples)
    if max_examples:
        records, count = records.take(max_examples), min(count, max_examples)
    if not count:
        raise ValueError(f"{name} split {split!r} has no examples")
    return Source(records, count, _class_names(spec), f"{name} {split}")
