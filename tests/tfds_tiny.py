"""Two tiny tfds datasets made from NumPy, prepared offline by tfds' own builder code: an
image-classification one (any such tfds name must train) and one that is not."""

import numpy as np
import tensorflow_datasets as tfds


def _images(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 60, (n, 32, 32, 3)).astype("uint8")
    for image, label in zip(images, labels):  # the class is the bright channel
        image[..., label] += 180
    return images, labels


class TinyColours(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3)),
            "label": tfds.features.ClassLabel(names=["red", "green", "blue"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(24, 0), "test": self._generate_examples(12, 1)}

    def _generate_examples(self, n, seed):
        images, labels = _images(n, seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}


class TinyCaptions(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3)), "caption": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        images, _ = _images(4, 0)
        for i, image in enumerate(images):
            yield i, {"image": image, "caption": "a colour"}


def prepare(data_dir):
    for builder in (TinyColours, TinyCaptions):
        builder(data_dir=data_dir).download_and_prepare()
