"""The paper's object enlargement, and the evaluation preprocessing around it (SKNet §6).

"Enlarging the object s times" is: centre-crop the image to 1/s of each side and resize it
back to its own size. It is applied to the decoded image; the enlarged image then goes
through exactly the trainer's evaluation preprocessing (`pipeline.eval_image`: shorter side
to size / crop fraction, centre crop; `pipeline.normalize`). To reuse that code unchanged,
the enlarged image is handed to it as a lossless PNG of the rounded uint8 pixels, as if the
enlarged copy had been saved to disk (scale 1 passes the original file through untouched).
"""

import tensorflow as tf

from sknet_keras.trainers.pipeline import eval_image, normalize


def check_scales(scales):
    """Scales as floats; each must be >= 1 (s < 1 would shrink the object out of a crop)."""
    try:
        values = [float(s) for s in scales]
    except (TypeError, ValueError):
        raise ValueError(f"--scales: numbers expected; got {list(scales)}") from None
    if not values:
        raise ValueError("--scales: give at least one scale, e.g. 1.0,1.5,2.0")
    bad = [s for s in values if not s >= 1.0]
    if bad:
        raise ValueError(f"--scales must be >= 1 (1.5 enlarges the object 1.5 times); got "
                         f"{', '.join(str(s) for s in bad)}")
    if len(set(values)) != len(values):
        raise ValueError(f"--scales: each scale once; got {values}")
    return values


def crop_window(height, width, scale):
    """(top, left, crop height, crop width) of the centred 1/scale of each side (>= 1 px)."""
    size = tf.cast(tf.stack([height, width]), tf.float32)
    crop = tf.maximum(1, tf.cast(tf.round(size / scale), tf.int32))
    offset = (tf.stack([height, width]) - crop) // 2
    return offset[0], offset[1], crop[0], crop[1]


def enlarge(image, scale, method="bilinear"):
    """An (H, W, 3) image with its centre `scale` times larger: centre crop to 1/scale of
    each side, resized back to H × W. Float32; scale 1 returns the image as float32."""
    image = tf.cast(image, tf.float32)
    if float(scale) == 1.0:
        return image
    shape = tf.shape(image)
    top, left, h, w = crop_window(shape[0], shape[1], float(scale))
    window = image[top:top + h, left:left + w]
    return tf.image.resize(window, shape[:2], method=method)


def enlarged_file(encoded, scale):
    """The encoded image, enlarged `scale` times, as a PNG of its rounded uint8 pixels."""
    if float(scale) == 1.0:
        return encoded
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    pixels = tf.round(tf.clip_by_value(enlarge(image, scale), 0.0, 255.0))
    return tf.io.encode_png(tf.cast(pixels, tf.uint8), compression=0)


def network_inputs(encoded, scales, image_size, crop_fraction=0.875, method="bicubic",
                   normalization="torch"):
    """(S, size, size, 3) float32: one image at every scale, preprocessed as the trainer
    evaluates (decode, resize, centre crop, normalize)."""
    return tf.stack([
        normalize(eval_image(enlarged_file(encoded, s), image_size, crop_fraction, method),
                  normalization)
        for s in scales])
