"""The one normalization (`sknet_keras.normalization`) against references written apart from
it: Keras' own `keras.applications.imagenet_utils.preprocess_input` for "torch", "caffe" and
"tf", and the SENet release's prototxt (`mean_value: 104, 117, 123` on BGR) for "senet";
through every way the package applies it: the applications' `preprocess_input` (NumPy,
backend tensors, channels first), the trainer's tf.data pipeline, keras-hub's image
converter, the export's serving model."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.applications import imagenet_utils as keras_imagenet_utils

from sknet_keras.applications import preprocess_input
from sknet_keras.normalization import MODES, normalize

SENET_BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)  # SE-ResNet-50.prototxt


def reference(x, mode, data_format="channels_last"):
    if mode == "senet":
        bgr = x[..., ::-1] if data_format == "channels_last" else x[:, ::-1]
        mean = SENET_BGR_MEAN if data_format == "channels_last" else SENET_BGR_MEAN[:, None,
                                                                                    None]
        return bgr - mean
    return keras_imagenet_utils.preprocess_input(x.copy(), data_format=data_format, mode=mode)


def _images(rng, shape=(2, 6, 5, 3)):
    return rng.uniform(0, 255, shape).astype("float32")


@pytest.mark.parametrize("mode", MODES)
def test_preprocess_input_is_the_reference_for_every_input_kind(mode, rng):
    x = _images(rng)
    want = reference(x, mode)
    np.testing.assert_allclose(preprocess_input(x, mode=mode), want, rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(preprocess_input(
        keras.ops.convert_to_tensor(x), mode=mode)), want, rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(preprocess_input(x.astype(np.uint8), mode=mode),
                               reference(x.astype(np.uint8).astype("float32"), mode),
                               rtol=1e-6, atol=2e-6)
    first = x.transpose(0, 3, 1, 2).copy()
    np.testing.assert_allclose(preprocess_input(first, data_format="channels_first", mode=mode),
                               reference(first, mode, "channels_first"), rtol=1e-6, atol=2e-6)


@pytest.mark.parametrize("mode", MODES)
def test_the_input_pipeline_normalizes_as_the_reference(mode, rng):
    from sknet_keras.trainers.pipeline import normalize as pipeline_normalize

    x = _images(rng)
    dataset = tf.data.Dataset.from_tensor_slices(x).map(lambda i: pipeline_normalize(i, mode))
    got = np.stack(list(dataset.as_numpy_iterator()))
    np.testing.assert_allclose(got, reference(x, mode), rtol=1e-6, atol=2e-6)


@pytest.mark.parametrize("mode", MODES)
def test_keras_hubs_image_converter_normalizes_as_the_reference(mode, rng):
    pytest.importorskip("keras_hub")
    from sknet_keras import hub

    scale, offset, order = hub.converter_normalization(mode)
    converter = hub.SKNetImageConverter(scale=scale, offset=offset, channel_order=order)
    x = _images(rng)
    np.testing.assert_allclose(np.asarray(converter(x)), reference(x, mode), rtol=1e-5,
                               atol=1e-4)


def test_an_unknown_mode_is_named():
    with pytest.raises(ValueError, match="unknown preprocessing mode 'bgr'; expected one of "
                                         "torch, caffe, senet, tf"):
        normalize(np.zeros((1, 2, 2, 3), np.float32), "bgr")
