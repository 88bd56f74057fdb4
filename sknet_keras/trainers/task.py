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
from sknet_keras.trainers.schedules import ScaledSchedule, WarmupSchedule
from sknet_keras.weights.files import assign_checked, is_sknet_weights_file, read_weights
from sknet_keras.applications.pretrained import load_imagenet_weights

HEAD_PREFIX = "predictions/"


class ClassificationTask:
    """A registry model trained with softmax cross-entropy on a `DataSpec`."""

    def __init__(self, config, spec):
        """`config`: resolved (`experiment.resolve`): its classes are the dataset's."""
        self.config = config
        self.spec = spec
        self.num_classes = config.model.num_classes or spec.num_classes
        self.normalization = config.data.normalization or preprocessing_mode(config.model.name)
        batch = config.schedule.batch_size
        self.steps_per_epoch = max(1, config.schedule.steps_per_epoch
                                   or spec.train_examples // batch)
        self.total_steps = (config.schedule.max_steps
                            or config.schedule.epochs * self.steps_per_epoch)
        o = config.optimizer
        self.freeze_steps = round(o.freeze_backbone_epochs * self.steps_per_epoch)
        self.split_optimizers = o.backbone_lr_multiplier != 1.0

    # --- what is trained -----------------------------------------------------------------

    def build_model(self):
        """The network with a logits head for this dataset, layers built with the run's
        precision, BN synchronization and rematerialization."""
        c = self.config
        size = c.data.image_size
        with build_options(sync_bn=c.model.sync_bn, rematerialize=c.model.rematerialize,
                           dtype_policy=c.precision_policy):
            model = build_model(c.model.name, input_shape=(size, size, 3),
                                classes=self.num_classes, classifier_activation=None)
        if c.model.weights:
            self.load_weights(model, c.model.weights, skip=(HEAD_PREFIX,))
        return model

    def load_weights(self, model, weights, skip=()):
        """`weights` ('imagenet' or a weights file) into `model`, but the layers under the
        `skip` prefixes (fine-tuning: the classifier, new for this dataset's classes)."""
        if weights == "imagenet":
            load_imagenet_weights(model, self.config.model.name, skip=skip)
            return
        if not is_sknet_weights_file(weights):
            raise ConfigError("model.weights", f"{weights!r} is not a weights file written by "
                              "sknet_keras (final.weights.h5 of a run, or a converted file)")
        tensors, _ = read_weights(weights)
        assign_checked(model, tensors, weights, skip=skip)

    # --- fine-tuning: which layers train when --------------------------------------------

    def trainable_phase(self, step):
        """(backbone frozen at `step`, the step at which that changes, or None): the loop
        ends its loops there and re-traces its step for the new variable list."""
        if step < self.freeze_steps:
            return True, self.freeze_steps
        return False, None

    @staticmethod
    def set_backbone_trainable(model, trainable):
        for layer in model.layers:
            if not layer.name.startswith(HEAD_PREFIX.rstrip("/")):
                layer.trainable = trainable

    @staticmethod
    def is_head(variable):
        return variable.path.startswith(HEAD_PREFIX)

    def build_optimizers(self):
        """{"optimizer": ...} — and, with --backbone_lr_multiplier, a "backbone_optimizer"
        for the pretrained layers at that fraction of the learning rate."""
        o = self.config.optimizer
        base_lr = o.learning_rate * self.config.schedule.batch_size / o.reference_batch_size
        schedule = WarmupSchedule(base_lr, self.steps_per_epoch, self.config.schedule.epochs,
                                  o.schedule, o.warmup_epochs, o.decay_epochs, o.decay_rate,
                                  o.milestones)
        optimizers = {"optimizer": self._optimizer(schedule)}
        if self.split_optimizers:
            # Applied only once the backbone is unfrozen: its own step count lags by that.
            optimizers["backbone_optimizer"] = self._optimizer(ScaledSchedule(
                schedule, o.backbone_lr_multiplier, offset=self.freeze_steps))
        return optimizers

    def _optimizer(self, schedule):
        o = self.config.optimizer
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

    @staticmethod
    def build_metrics():
        """Training metrics as sums over every replica's examples (read and reset by the
        loop): loss, top-1 hits, examples. Create under the strategy's scope."""
        sums = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.SUM)
        return {name: tf.Variable(0.0, name=name, **sums)
                for name in ("loss_sum", "correct", "seen")}

    @staticmethod
    def update_metrics(metrics, per_example_loss, hits):
        metrics["loss_sum"].assign_add(tf.reduce_sum(per_example_loss))
        metrics["correct"].assign_add(tf.reduce_sum(hits))
        metrics["seen"].assign_add(tf.cast(tf.shape(per_example_loss)[0], tf.float32))

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

    def train_step(self, batch, model, optimizers, forward_backward=None):
        """One replica's step; returns (per-example loss, top-1 hits)."""
        images, labels = batch
        optimizer = optimizers["optimizer"]
        grads, per_example, logits = (forward_backward or self.forward_backward)(
            model, optimizer, images, labels)
        pairs = list(zip(grads, model.trainable_variables))
        if "backbone_optimizer" in optimizers:
            backbone = [(g, v) for g, v in pairs if not self.is_head(v)]
            pairs = [(g, v) for g, v in pairs if self.is_head(v)]
            if backbone:  # (none while the backbone is frozen)
                optimizers["backbone_optimizer"].apply_gradients(backbone)
        optimizer.apply_gradients(pairs)
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
