"""`python -m sknet_keras.trainers.train`: train any registry model.

Default (no flags): SKNet-26 on scikit-learn's bundled 8×8 digits upsampled to 32×32 — no
download, a few minutes on 2 CPU cores, prints validation accuracy. See README for
ImageNet / CIFAR on 1 GPU, 8 GPUs and several machines.
"""

import json
import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "sknet26", "Registry model name.")
flags.DEFINE_enum("dataset", "digits", ["imagenet2012", "cifar10", "cifar100", "image_folder",
                                        "digits"], "Dataset.")
flags.DEFINE_string("data_dir", None, "tfds data_dir, or the image_folder root.")
flags.DEFINE_string("model_dir", "runs/default", "Checkpoints, TensorBoard logs, exports.")
flags.DEFINE_integer("epochs", None, "Epochs (default: 100 for ImageNet, 200 CIFAR, 10 digits).")
flags.DEFINE_integer("batch_size", None, "Global batch size (default 256; 64 for digits).")
flags.DEFINE_integer("image_size", None, "Training resolution (224; 32 for CIFAR and digits).")
flags.DEFINE_float("learning_rate", None, "Base learning rate for batch 256, scaled linearly "
                   "(default 0.1).")
flags.DEFINE_enum("lr_schedule", None, ["step", "cosine"],
                  "×0.1 every --decay_epochs (default; the papers), or cosine (default for "
                  "digits).")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear warmup epochs.")
flags.DEFINE_float("decay_epochs", 30, "Epochs between ×0.1 steps (step schedule).")
flags.DEFINE_float("weight_decay", 1e-4, "Weight decay (not on BN or biases).")
flags.DEFINE_float("label_smoothing", 0.1, "Label smoothing.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adamw", "rmsprop"], "Optimizer (SGD momentum 0.9).")
flags.DEFINE_enum("mixed_precision", None, ["float32", "bfloat16", "float16"],
                  "Precision (default: bfloat16 on CPU/TPU, float16 on GPU).")
flags.DEFINE_enum("strategy", "default", ["default", "one_device", "mirrored",
                                          "multi_worker_mirrored", "tpu"], "tf.distribute.")
flags.DEFINE_integer("cpu_replicas", 1, "Split the CPU into N logical devices (replicas).")
flags.DEFINE_string("tpu", None, "TPU address (--strategy=tpu).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the per-replica forward/backward.")
flags.DEFINE_bool("sync_bn", False, "Synchronize BN batch statistics across replicas.")
flags.DEFINE_bool("rematerialize", False, "Recompute each SK unit in the backward "
                  "(less memory, slower steps).")
flags.DEFINE_integer("steps_per_epoch", None, "Override steps per epoch (short runs).")
flags.DEFINE_integer("max_steps", None, "Stop after this many steps in all.")
flags.DEFINE_integer("steps_per_loop", 50, "Steps per tf.function call (and per checkpoint).")
flags.DEFINE_bool("resume", True, "Resume from the latest checkpoint in --model_dir.")
flags.DEFINE_enum("augment", None, ["senet", "cifar", "none"],
                  "Training augmentation (default: senet for ImageNet / image_folder, cifar "
                  "for CIFAR, none for digits).")
flags.DEFINE_float("randaugment_magnitude", 0.0, "keras-cv RandAugment magnitude (0: off).")
flags.DEFINE_integer("randaugment_ops", 2, "RandAugment operations per image.")
flags.DEFINE_float("mixup_alpha", 0.0, "MixUp alpha (0: off).")
flags.DEFINE_float("cutmix_alpha", 0.0, "CutMix alpha (0: off).")
flags.DEFINE_float("rotation", 10.0, "Random rotation range in degrees (SENet: 10).")
flags.DEFINE_float("pixel_jitter", 20.0, "Random per-channel shift range (SENet: 20).")
flags.DEFINE_enum("on_bad_image", "skip", ["skip", "stop"],
                  "Corrupt images: skip (named, counted) or stop the run.")
flags.DEFINE_integer("seed", 0, "Random seed (weights and data order).")
flags.DEFINE_bool("export", True, "Write final.weights.h5 and a SavedModel at the end.")

DEFAULTS = {  # dataset -> (epochs, batch, image size, augmentation, base learning rate)
    "imagenet2012": (100, 256, 224, "senet", 0.1), "image_folder": (100, 256, 224, "senet", 0.1),
    "cifar10": (200, 128, 32, "cifar", 0.1), "cifar100": (200, 128, 32, "cifar", 0.1),
    "digits": (10, 64, 32, "none", 0.1),
}


def validate_flags():
    """Inconsistent flag combinations fail at once, naming the flag."""
    if FLAGS.strategy == "tpu" and not FLAGS.tpu and "TPU_NAME" not in os.environ:
        raise app.UsageError("--strategy=tpu needs --tpu (or TPU_NAME)")
    if FLAGS.cpu_replicas > 1 and FLAGS.strategy in ("default", "one_device", "tpu"):
        raise app.UsageError(f"--cpu_replicas={FLAGS.cpu_replicas} needs --strategy=mirrored "
                             f"or multi_worker_mirrored (got --strategy={FLAGS.strategy})")
    for name in ("epochs", "batch_size", "image_size", "steps_per_epoch", "max_steps"):
        value = getattr(FLAGS, name)
        if value is not None and value < 1:
            raise app.UsageError(f"--{name} must be >= 1; got {value}")
    if FLAGS.image_size is not None and FLAGS.image_size < 32:
        raise app.UsageError(f"--image_size must be >= 32; got {FLAGS.image_size}")
    if FLAGS.learning_rate is not None and FLAGS.learning_rate <= 0:
        raise app.UsageError(f"--learning_rate must be > 0; got {FLAGS.learning_rate}")
    if not 0 <= FLAGS.randaugment_magnitude <= 1:
        raise app.UsageError("--randaugment_magnitude must be in [0, 1]; got "
                             f"{FLAGS.randaugment_magnitude}")
    if FLAGS.jit_compile and FLAGS.sync_bn:
        raise app.UsageError("--jit_compile and --sync_bn cannot be combined (synchronized BN "
                             "all-reduces inside the XLA-compiled per-replica step)")
    if FLAGS.dataset == "image_folder" and not FLAGS.data_dir:
        raise app.UsageError("--dataset=image_folder needs --data_dir")
    if not 0 <= FLAGS.label_smoothing < 1:
        raise app.UsageError(f"--label_smoothing must be in [0, 1); got {FLAGS.label_smoothing}")


def default_precision():
    import tensorflow as tf

    return "float16" if tf.config.list_physical_devices("GPU") else "bfloat16"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    validate_flags()
    from sknet_keras.registry import get_model_config
    from sknet_keras.trainers.strategy import make_strategy

    try:
        config = get_model_config(FLAGS.model)
    except ValueError as e:
        raise app.UsageError(f"--model: {e}") from None
    try:
        strategy = make_strategy(FLAGS.strategy, FLAGS.cpu_replicas, FLAGS.tpu)
    except ValueError as e:
        raise app.UsageError(str(e)) from None

    import keras

    from sknet_keras.applications import preprocessing_mode
    from sknet_keras.trainers import data as data_lib
    from sknet_keras.trainers.loop import Trainer
    from sknet_keras.trainers.schedules import WarmupSchedule

    keras.utils.set_random_seed(FLAGS.seed)
    try:
        spec = data_lib.load_spec(FLAGS.dataset, FLAGS.data_dir)
    except data_lib.DataError as e:
        raise app.UsageError(str(e)) from None
    epochs, batch, size, augment, base_lr = DEFAULTS[FLAGS.dataset]
    base_lr = FLAGS.learning_rate or base_lr
    epochs, batch = FLAGS.epochs or epochs, FLAGS.batch_size or batch
    size = FLAGS.image_size or size
    if batch % strategy.num_replicas_in_sync:
        raise app.UsageError(f"--batch_size={batch} must be divisible by the "
                             f"{strategy.num_replicas_in_sync} replicas")
    steps_per_epoch = FLAGS.steps_per_epoch or spec.train_examples // batch
    if steps_per_epoch < 1:
        raise app.UsageError(f"--batch_size={batch} exceeds the {spec.train_examples} training "
                             "examples")
    precision = FLAGS.mixed_precision or default_precision()
    pipeline = data_lib.PipelineConfig(
        image_size=size, normalization=preprocessing_mode(config), augment=FLAGS.augment or augment,
        rotation=FLAGS.rotation,
        jitter=FLAGS.pixel_jitter, mixup_alpha=FLAGS.mixup_alpha,
        randaugment_magnitude=FLAGS.randaugment_magnitude, randaugment_ops=FLAGS.randaugment_ops,
        cutmix_alpha=FLAGS.cutmix_alpha, on_bad_image=FLAGS.on_bad_image, seed=FLAGS.seed,
        crop_fraction=0.875, eval_interpolation="bicubic")
    kind = FLAGS.lr_schedule or ("cosine" if FLAGS.dataset == "digits" else "step")
    schedule = WarmupSchedule(base_lr * batch / 256, steps_per_epoch, epochs, kind,
                              FLAGS.warmup_epochs, FLAGS.decay_epochs)
    os.makedirs(FLAGS.model_dir, exist_ok=True)
    print(f"{config.name} on {FLAGS.dataset} ({spec.train_examples} train / "
          f"{spec.eval_examples} eval images, {spec.num_classes} classes), {size}x{size}, "
          f"global batch {batch} over {strategy.num_replicas_in_sync} replica(s), {precision}, "
          f"{steps_per_epoch} steps/epoch", flush=True)
    trainer = Trainer(strategy, config, spec, pipeline, FLAGS.model_dir, global_batch_size=batch,
                      epochs=epochs, steps_per_epoch=steps_per_epoch, max_steps=FLAGS.max_steps,
                      schedule=schedule, optimizer_name=FLAGS.optimizer,
                      weight_decay=FLAGS.weight_decay, label_smoothing=FLAGS.label_smoothing,
                      precision=precision, jit_compile=FLAGS.jit_compile,
                      steps_per_loop=FLAGS.steps_per_loop, resume=FLAGS.resume,
                      sync_bn=FLAGS.sync_bn, rematerialize=FLAGS.rematerialize)
    history = trainer.train()
    if FLAGS.export:
        path = trainer.export()
        if path:
            print(f"exported {path} and {os.path.join(FLAGS.model_dir, 'final.weights.h5')}")
    history["step"] = trainer.step
    name = "result.json" if trainer.chief else f"result.worker{trainer.task_id}.json"
    with open(os.path.join(FLAGS.model_dir, name), "w") as f:
        json.dump(history, f, indent=2)
    if "val_top1" in history:
        print(f"validation accuracy: {history['val_top1']:.4f} (top-5 {history['val_top5']:.4f}, "
              f"chance {1 / spec.num_classes:.4f})")
    sys.stdout.flush()


def run():
    logging.set_verbosity(logging.WARNING)
    app.run(main)


if __name__ == "__main__":
    run()
