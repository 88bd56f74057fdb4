"""Input pipelines: decoding, the papers' augmentations, per-replica batches.

Images are read encoded (`tfds.decode.SkipDecoding`) and decoded here, so the training crop
is fused with JPEG decoding (`decode_and_crop_jpeg` decodes only the crop), and so a corrupt
file can be reported by name. `tf.image` ops are used for augmentation: `sample_distorted_bounding_box` is faster than
keras-cv's RandomCropAndResize (docs/performance.md), and the rotation is one
`ImageProjectiveTransformV3` per image.

Every random draw is stateless, seeded by (seed, epoch, input pipeline, position in the
epoch): an epoch's batches are a pure function of those, so a run resumed mid-epoch sees
exactly the batches an uninterrupted run would have seen (keras-cv's RandAugment is the
one exception: it draws from its own state).

Evaluation batches are always full: the split is padded with examples of weight 0 up to a
whole number of global batches, so no replica ever gets a partial or empty batch, and every
real example is counted exactly once.
"""

import math
import sys

import tensorflow as tf

from sknet_keras.extras import require
from sknet_keras.normalization import normalize
from sknet_keras.trainers.datasets import DataError, records

BAD_IMAGE = "corrupt or undecodable image:"


# --- decoding and augmentation -------------------------------------------------------------

def _looks_complete(encoded):
    """Cheap framing check: a JPEG must end in EOI and a PNG in IEND (a truncated file often
    still decodes, grey-filled). Other formats are left to the decoder."""
    n = tf.strings.length(encoded)
    head = tf.strings.substr(encoded, 0, 8)
    # The last 16 bytes, NUL-padded in front: a file shorter than that is still checked
    # (padding the tail only, not copying the file).
    tail = tf.strings.substr(encoded, tf.maximum(n - 16, 0), 16)
    tail = tf.strings.substr(tf.strings.join([b"\0" * 16, tail]), tf.minimum(n, 16), 16)
    # EOI among the last 16 bytes (some encoders append padding after it).
    pairs = tf.strings.substr(tf.fill([15], tail), tf.range(15), tf.fill([15], 2))
    is_jpeg = tf.strings.substr(head, 0, 2) == b"\xff\xd8"
    is_png = head == b"\x89PNG\r\n\x1a\n"
    jpeg_ok = tf.logical_or(tf.logical_not(is_jpeg), tf.reduce_any(pairs == b"\xff\xd9"))
    png_ok = tf.logical_or(tf.logical_not(is_png),
                           tf.strings.substr(encoded, tf.maximum(n - 8, 0), 8)
                           == b"IEND\xaeB`\x82")
    return tf.logical_and(jpeg_ok, png_ok)


# The largest image decoded: 2^26 pixels (8192 x 8192; 201 MB as RGB bytes, 805 MB as the
# float32 image evaluation resizes). A file may declare any size in a few bytes (a 65 000 x
# 65 000 JPEG header on 40 x 48 pixels of data, a PNG of 20 000 x 20 000 zeros in 300 kB):
# decoded, it would take gigabytes per image in each parallel decoder.
MAX_PIXELS = 1 << 26


def _declared_size_ok(encoded):
    """An op that fails (the image is then named and skipped, as undecodable) unless
    `encoded` is a JPEG or PNG whose header declares at most MAX_PIXELS pixels; read from
    the header alone, before anything is decoded. Other formats (a GIF or BMP under a .jpg
    name) are refused: the image folder takes .jpg, .jpeg and .png."""
    head = tf.strings.substr(tf.strings.join([encoded, b"\0" * 24]), 0, 24)
    is_jpeg = tf.strings.substr(head, 0, 2) == b"\xff\xd8"
    is_png = tf.strings.substr(head, 0, 8) == b"\x89PNG\r\n\x1a\n"
    png = tf.cast(tf.io.decode_raw(tf.strings.substr(head, 16, 8), tf.uint8), tf.int64)
    png_pixels = ((png[0] * 256 + png[1]) * 256 + png[2]) * 256 + png[3]
    png_pixels *= ((png[4] * 256 + png[5]) * 256 + png[6]) * 256 + png[7]
    pixels = tf.cond(is_jpeg, lambda: tf.reduce_prod(tf.cast(
        tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)), lambda: png_pixels)
    return tf.debugging.Assert(
        tf.logical_and(tf.logical_or(is_jpeg, is_png), pixels <= MAX_PIXELS),
        ["not a JPEG or PNG, or larger than MAX_PIXELS:", pixels], summarize=1)


def _decode(encoded):
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _random_crop(encoded, image_size, seed, area_range=(0.08, 1.0)):
    """Random crop of `area_range` of the area, aspect 3/4–4/3, fused with JPEG decoding."""
    is_jpeg = tf.strings.substr(encoded, 0, 2) == b"\xff\xd8"
    shape = tf.cond(is_jpeg, lambda: tf.image.extract_jpeg_shape(encoded),
                    lambda: tf.shape(_decode(encoded)))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=tuple(area_range), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    crop = tf.cond(
        is_jpeg,
        lambda: tf.image.decode_and_crop_jpeg(encoded, window, channels=3),
        lambda: tf.slice(_decode(encoded), [begin[0], begin[1], 0], [size[0], size[1], 3]))
    return tf.image.resize(crop, [image_size, image_size], method="bilinear")


def _rotate(image, max_degrees, seed):
    """Rotate about the centre by a uniform angle in ±max_degrees (bilinear, zero fill)."""
    angle = tf.random.stateless_uniform([], seed, -max_degrees, max_degrees) * math.pi / 180
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2
    transform = tf.stack([cos, -sin, x_off, sin, cos, y_off, 0.0, 0.0])[None]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]


def train_image(encoded, image_size, seed, rotation=10.0, jitter=20.0, area_range=(0.08, 1.0)):
    """SENet training augmentation → float32 RGB in [0, 255]: random area crop, mirror,
    rotation, per-channel pixel jitter (the lightweight recipe turns the last two off)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    image = _random_crop(encoded, image_size, seeds[0], area_range)
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if rotation:
        image = _rotate(image, rotation, seeds[2])
    if jitter:
        image = image + tf.random.stateless_uniform([1, 1, 3], seeds[3], -jitter, jitter)
    return tf.clip_by_value(image, 0.0, 255.0)


def cifar_train_image(encoded, image_size, seed, pad=4):
    """CIFAR recipe: resize to image_size, pad 4, random crop back, mirror."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    image = tf.image.resize(tf.cast(_decode(encoded), tf.float32), [image_size, image_size])
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seeds[0])
    return tf.image.stateless_random_flip_left_right(image, seeds[1])


def eval_image(encoded, image_size, crop_fraction=0.875, method="bicubic"):
    """Resize the shorter side to image_size / crop_fraction, centre crop image_size."""
    image = tf.cast(_decode(encoded), tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (image_size / crop_fraction) / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new, method=method)
    top = (new[0] - image_size) // 2
    left = (new[1] - image_size) // 2
    image = image[top:top + image_size, left:left + image_size]
    return tf.clip_by_value(tf.ensure_shape(image, [image_size, image_size, 3]), 0.0, 255.0)


def rand_augment(magnitude, ops):
    """keras-cv's per-image RandAugment: several times faster than Keras core's
    (docs/performance.md), which also draws one set of ops per batch, not per image."""
    keras_cv = require("keras_cv", "--randaugment_magnitude")
    return keras_cv.layers.RandAugment(value_range=(0, 255), augmentations_per_image=ops,
                                       magnitude=magnitude)


def mix_batch(images, labels, seed, mixup_alpha=0.0, cutmix_alpha=0.0):
    """MixUp or CutMix (chosen at random when both are on) on a batch with one-hot labels."""
    if not mixup_alpha and not cutmix_alpha:
        return images, labels
    seeds = tf.random.experimental.stateless_split(seed, 7)

    def beta(alpha, s1, s2):
        a = tf.random.stateless_gamma([], s1, alpha)
        return a / (a + tf.random.stateless_gamma([], s2, alpha))

    perm = tf.argsort(tf.random.stateless_uniform([tf.shape(images)[0]], seeds[0]))
    use_cutmix = (tf.random.stateless_uniform([], seeds[1]) < 0.5
                  if (mixup_alpha and cutmix_alpha) else tf.constant(bool(cutmix_alpha)))

    def mixup():
        lam = beta(mixup_alpha, seeds[2], seeds[3])
        return (lam * images + (1 - lam) * tf.gather(images, perm),
                lam * labels + (1 - lam) * tf.gather(labels, perm))

    def cutmix():
        lam = beta(cutmix_alpha, seeds[4], seeds[5])
        h, w = tf.shape(images)[1], tf.shape(images)[2]
        ch = tf.cast(tf.cast(h, tf.float32) * tf.sqrt(1 - lam), tf.int32)
        cw = tf.cast(tf.cast(w, tf.float32) * tf.sqrt(1 - lam), tf.int32)
        centre = tf.random.stateless_uniform([2], seeds[6])
        cy = tf.cast(centre[0] * tf.cast(h, tf.float32), tf.int32)
        cx = tf.cast(centre[1] * tf.cast(w, tf.float32), tf.int32)
        y0, y1 = tf.clip_by_value(cy - ch // 2, 0, h), tf.clip_by_value(cy + ch // 2, 0, h)
        x0, x1 = tf.clip_by_value(cx - cw // 2, 0, w), tf.clip_by_value(cx + cw // 2, 0, w)
        ys, xs = tf.range(h)[:, None], tf.range(w)[None, :]
        box = tf.cast((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1),
                      images.dtype)[None, :, :, None]
        area = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(h * w, tf.float32)
        return (images * (1 - box) + tf.gather(images, perm) * box,
                (1 - area) * labels + area * tf.gather(labels, perm))

    return tf.cond(use_cutmix, cutmix, mixup)


# --- datasets ------------------------------------------------------------------------------

class BadImageCounter:
    """Counts (and names, on stderr) the images skipped as corrupt."""

    def __init__(self):
        self.variable = tf.Variable(0, dtype=tf.int64, trainable=False)

    @property
    def count(self):
        return int(self.variable.numpy())


def decode_each(ds, prepare, placeholder, on_bad_image="skip", counter=None):
    """`ds.map(prepare)` over (encoded, label, name, …) records, where an image that cannot be
    read is named on stderr and skipped (counted in `counter`), or stops the run with an
    error naming it (`on_bad_image="stop"`).

    Written by hand because tf.data can only drop a failing element (`ignore_errors`), not
    say which one failed. The images are decoded by a parallel, ordered `map`; the names of
    the images in flight wait in a hash table keyed by position, and a sequential `scan`
    after the map sees which positions never arrived (a truncated file, dropped by its
    framing, or a decoding error). A last marker flushes failures at the end. It runs
    about as fast as the plain map that cannot name failures, and faster than decoding each
    image in a dataset of its own (docs/performance.md, "Input pipeline").
    """
    table = tf.lookup.experimental.MutableHashTable(tf.int64, tf.string, default_value="")

    def remember(position, record):
        with tf.control_dependencies([table.insert(position[None], record[2][None])]):
            return tf.identity(position), record

    def looks_complete(position, record):
        return _looks_complete(record[0])

    def decode(position, record):
        with tf.control_dependencies([_declared_size_ok(record[0])]):
            return position, prepare(*record)

    def check(last, element):
        position, example = element
        end = position < 0
        missing = tf.cond(end, lambda: tf.sort(table.export()[0]),
                          lambda: tf.range(last + 1, position))
        names = table.lookup(missing)
        with tf.control_dependencies([names]):
            removed = table.remove(tf.concat([missing, position[None]], 0))
        count = tf.size(names, tf.int64)
        if on_bad_image == "stop":
            first = tf.concat([names, [""]], 0)[0]
            checks = [tf.debugging.Assert(count == 0, [BAD_IMAGE, first], summarize=1)]
        else:
            checks = [tf.cond(count > 0, lambda: _report(names, counter), tf.no_op)]
        with tf.control_dependencies([removed] + checks):
            return tf.identity(position), (example, tf.logical_not(end))

    ds = ds.enumerate().map(remember)  # sequential: every name in before its image
    ds = ds.filter(looks_complete)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    ds = ds.concatenate(tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), placeholder)))
    ds = ds.scan(tf.constant(-1, tf.int64), check)
    return ds.filter(_second).map(_first)


def stop_on_bad_image(dataset):
    """Iterate, turning `--on_bad_image=stop`'s assertion into a DataError naming the file."""
    iterator = iter(dataset)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except tf.errors.InvalidArgumentError as e:
            raise bad_image_error(e) from None


def bad_image_error(error):
    """`error` as a DataError naming the image, if it is `--on_bad_image=stop`'s assertion."""
    message = getattr(error, "message", str(error))
    if BAD_IMAGE in message:
        name = message.split(BAD_IMAGE, 1)[1].strip().splitlines()[0].strip()
        name = name.strip("[]'\" ").removeprefix("b'").strip("'")
        return DataError(f"{BAD_IMAGE} {name} (--on_bad_image=stop)")
    return error


def _first(a, b):
    return a


def _second(a, b):
    return b


def _report(names, counter):
    lines = tf.strings.reduce_join("skipping " + BAD_IMAGE + " " + names, separator="\n")
    lines = tf.reshape(lines, [])  # of known rank: tf.print quotes and escapes the others
    ops = [tf.print(lines, output_stream=sys.stderr)]
    if counter is not None:
        ops.append(counter.variable.assign_add(tf.size(names, tf.int64)))
    with tf.control_dependencies(ops):
        return tf.no_op()


def _padded(ds, spec, split, global_batch_size, replicas_here, batch, size):
    """Evaluation examples padded with weight-0 ones: every pipeline yields the same number
    of full batches, steps × its replicas."""
    steps = max(1, -(-spec.examples(split) // global_batch_size))
    pad = tf.data.Dataset.from_tensors((
        tf.zeros([size, size, 3]), tf.zeros([spec.num_classes]), tf.constant(0.0)))
    return ds.concatenate(pad.repeat()).take(steps * replicas_here * batch)


def make_dataset(spec, split, data, global_batch_size, training, input_context=None,
                 epoch=0, skip_batches=0, counter=None, seed=0, normalization="torch"):
    """One replica's batches for one epoch.

    Training: (image, one-hot label), full batches, shuffled by (seed, epoch); the first
    `skip_batches` batches are skipped before decoding (a resumed run). Evaluation: (image,
    one-hot label, weight), padded to whole global batches with weight-0 examples.
    `data` is a `DataConfig`.
    """
    replicas = input_context.num_replicas_in_sync if input_context else 1
    pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    batch = global_batch_size // replicas
    if batch * replicas != global_batch_size:
        raise ValueError(f"the global batch size {global_batch_size} must be divisible by "
                         f"the {replicas} replicas")
    ds = records(spec, split, shuffle_files=training, seed=seed + epoch)
    if pipelines > 1:
        ds = ds.shard(pipelines, pipeline_id)
    if training:
        ds = ds.shuffle(data.shuffle_buffer, seed=seed + epoch, reshuffle_each_iteration=False)
    ds = ds.enumerate()  # position in this pipeline's epoch: the per-example random seed
    if training and skip_batches:
        ds = ds.skip(skip_batches * batch)  # before decoding: cheap
    ds = ds.map(lambda i, r: (*r, i))
    base_seed = tf.constant([seed, epoch * 1024 + pipeline_id], tf.int64)
    randaugment = (rand_augment(data.randaugment_magnitude, data.randaugment_ops)
                   if training and data.randaugment_magnitude else None)
    size = data.image_size

    def prepare(encoded, label, name, index):
        one_hot = tf.one_hot(label, spec.num_classes)
        if not training:
            image = eval_image(encoded, size, data.crop_fraction, data.eval_interpolation)
            return normalize(image, normalization), one_hot, tf.constant(1.0)
        example_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
        if data.augment in ("senet", "lightweight"):
            image = train_image(encoded, size, example_seed, data.rotation, data.pixel_jitter,
                                data.crop_area)
        elif data.augment == "cifar":
            image = cifar_train_image(encoded, size, example_seed)
        else:
            image = tf.image.resize(tf.cast(_decode(encoded), tf.float32), [size, size])
        if randaugment is not None:
            image = tf.clip_by_value(tf.cast(randaugment(image), tf.float32), 0.0, 255.0)
        return normalize(image, normalization), one_hot

    placeholder = (tf.zeros([size, size, 3]), tf.zeros([spec.num_classes]))
    ds = decode_each(ds, prepare, placeholder + ((tf.constant(0.0),) if not training else ()),
                     data.on_bad_image, counter)
    if not training:
        ds = _padded(ds, spec, split, global_batch_size, replicas // pipelines, batch, size)
    ds = ds.batch(batch, drop_remainder=True)
    if training and (data.mixup_alpha or data.cutmix_alpha):
        ds = ds.enumerate(start=skip_batches).map(
            lambda i, xy: mix_batch(*xy, tf.random.experimental.stateless_fold_in(
                base_seed + 1, i), data.mixup_alpha, data.cutmix_alpha),
            num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def distributed_dataset(strategy, spec, split, data, global_batch_size, training, epoch=0,
                        skip_batches=0, counter=None, seed=0, normalization="torch"):
    """Per-replica batches, sharded by input context, for `strategy`."""
    def fn(ctx):
        return make_dataset(spec, split, data, global_batch_size, training, ctx, epoch,
                            skip_batches, counter, seed, normalization)

    return strategy.distribute_datasets_from_function(fn)
