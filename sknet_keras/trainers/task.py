"""Image classification as a task (TF Model Garden's `base_task.Task` shape).

The task knows what is trained and how one step goes: it builds the model, the inputs, the
loss, the optimizer, and runs one replica's training or validation step. It knows nothing of
loops, checkpoints or summaries (`loop.Trainer`), so `evaluate` reuses it unchanged.
"""

import keras
import tensorflow as tf

from sknet_keras.applications import build_model, preprocessing_mode
from sknet_keras.layers.options import build_options
from sknet_keras.trainers import pipeline
from sknet_keras.trainers.configs import ConfigError
from sknet_keras.trainers.schedules import WarmupSchedule

HEAD_PREFIX = "predictions/"


class ClassificationTask:
    """A registry model trained with softmax cross-entropy on a `DataSpec`."""

    def __init__(self, config, spec):
        self.config = config
        self.spec = spec
        self.num_classes = config.model.num_classes or spec.num_classes
        if self.num_classes != spec.num_classes:
            raise ConfigError(f"the model has {self.num_classes} classes but {spec.name} has "
                              f"{spec.num_classes}")
        self.normalization = config.data.normalization or preprocessing_mode(config.model.name)
        batch = config.schedule.batch_size
        self.steps_per_epoch = config.schedule.steps_per_epoch or spec.train_examples // batch
        if self.steps_per_epoch < 1:
            raise ConfigError(f"--batch_size={batch} exceeds the {spec.train_examples} "
                              "training examples")
        self.total_steps = (config.schedule.max_steps
                            or config.schedule.epochs * self.steps_per_epoch)

    # --- what is trained -----------------------------------------------------------------

    def build_model(self):
        """The network with a logits head for this dataset, layers built with the run's
        precision, BN synchronization and rematerialization."""
        c = self.config
        size = c.data.image_size
        with build_options(sync_bn=c.model.sync_bn, rematerialize=c.model.rematerialize,
                           dtype_policy=c.precision_policy):
            return build_model(c.model.name, input_shape=(size, size, 3),
                               classes=self.num_classes, classifier_activation=None)

    def build_optimizer(self):
        o = self.config.optimizer
        base_lr = o.learning_rate * self.config.schedule.batch_size / o.reference_batch_size
        schedule = WarmupSchedule(base_lr, self.steps_per_epoch, self.config.schedule.epochs,
                                  o.schedule, o.warmup_epochs, o.decay_epochs, o.decay_rate,
                                  o.milestones)
        if o.optimizer == "sgd":
            opt = keras.optimizers.SGD(schedule, momentum=0.9,
                                       weight_decay=o.weight_decay or None)
        elif o.optimizer == "adamw":
            opt = keras.optimizers.AdamW(schedule, weight_decay=o.weight_decay)
        else:
            opt = keras.optimizers.RMSprop(schedule, momentum=0.9,
                                           weight_decay=o.weight_decay or None)
        if o.weight_decay:
            opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        if self.config.runtime.precision == "float16":
            opt = keras.optimizers.LossScaleOptimizer(opt)
        return opt

    def build_inputs(self, strategy, training, epoch=0, skip_batches=0, counter=None):
        """Per-replica batches of one training epoch, or of the whole evaluation split."""
        split = self.spec.train_split if training else self.spec.eval_split
        return pipeline.distributed_dataset(
            strategy, self.spec, split, self.config.data, self.config.schedule.batch_size,
            training, epoch=epoch, skip_batches=skip_batches, counter=counter,
            seed=self.config.schedule.seed, normalization=self.normalization)

    def build_losses(self, labels, logits):
        """Per-example softmax cross-entropy with label smoothing, in float32."""
        loss = keras.losses.categorical_crossentropy(
            labels, tf.cast(logits, tf.float32), from_logits=True,
            label_smoothing=self.config.optimizer.label_smoothing)
        return loss

    # --- one replica's steps -------------------------------------------------------------

    def forward_backward(self, model, optimizer, images, labels):
        """Loss (averaged over the global batch, scaled for float16) and its gradients."""
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = self.build_losses(labels, logits)
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=self.config.schedule.batch_size)
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        return tape.gradient(scaled, model.trainable_variables), per_example, logits

    def train_step(self, batch, model, optimizer, forward_backward=None):
        """One replica's step; returns (per-example loss, number of top-1 hits)."""
        images, labels = batch
        grads, per_example, logits = (forward_backward or self.forward_backward)(
            model, optimizer, images, labels)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return per_example, top_k_hits(logits, labels, 1)

    def validation_step(self, batch, model):
        """One replica's (top-1 hits, top-5 hits, examples), padding examples weighted 0."""
        images, labels, weights = batch
        logits = tf.cast(model(images, training=False), tf.float32)
        k = min(5, self.num_classes)
        return (tf.reduce_sum(top_k_hits(logits, labels, 1) * weights),
                tf.reduce_sum(top_k_hits(logits, labels, k) * weights),
                tf.reduce_sum(weights))


def top_k_hits(logits, labels, k):
    """1.0 where the (possibly soft) label's class is among the k largest logits."""
    return tf.cast(tf.math.in_top_k(tf.argmax(labels, -1), tf.cast(logits, tf.float32), k),
                   tf.float32)
