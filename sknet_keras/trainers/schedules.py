"""Learning-rate schedules of the papers: step decay (every N epochs or at milestones) or
cosine, with linear warmup."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="sknet_keras")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then `step` (×decay_rate every decay_epochs, or at each of
    `milestones` epochs when given) or `cosine` to zero."""

    def __init__(self, base_lr, steps_per_epoch, epochs, kind="step", warmup_epochs=0.0,
                 decay_epochs=30, decay_rate=0.1, milestones=()):
        if kind not in ("step", "cosine"):
            raise ValueError(f"--lr_schedule: unknown schedule {kind!r}; expected step or cosine")
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = float(epochs)
        self.kind = kind
        self.warmup_epochs = float(warmup_epochs)
        self.decay_epochs = float(decay_epochs)
        self.decay_rate = float(decay_rate)
        self.milestones = tuple(sorted(float(m) for m in milestones))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.warmup_epochs * self.steps_per_epoch
        total = max(self.epochs * self.steps_per_epoch, 1.0)
        if self.kind == "step" and self.milestones:
            passed = sum(ops.cast(step >= m * self.steps_per_epoch, "float32")
                         for m in self.milestones)
            lr = self.base_lr * ops.power(self.decay_rate, passed)
        elif self.kind == "step":
            period = max(self.decay_epochs * self.steps_per_epoch, 1.0)
            lr = self.base_lr * ops.power(self.decay_rate, ops.floor(step / period))
        else:
            progress = ops.clip((step - warmup) / max(total - warmup, 1.0), 0.0, 1.0)
            lr = 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * progress))
        if warmup > 0:
            lr = ops.where(step < warmup, self.base_lr * (step + 1) / warmup, lr)
        return lr

    def get_config(self):
        return dict(base_lr=self.base_lr, steps_per_epoch=self.steps_per_epoch,
                    epochs=self.epochs, kind=self.kind, warmup_epochs=self.warmup_epochs,
                    decay_epochs=self.decay_epochs, decay_rate=self.decay_rate,
                    milestones=list(self.milestones))


@keras.saving.register_keras_serializable(package="sknet_keras")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`factor` × `schedule` at step + `offset`: the pretrained layers' rate in
    fine-tuning, for an optimizer that starts `offset` steps into the run."""

    def __init__(self, schedule, factor, offset=0):
        self.schedule = schedule
        self.factor = float(factor)
        self.offset = int(offset)

    def __call__(self, step):
        return self.factor * self.schedule(ops.cast(step, "float32") + self.offset)

    def get_config(self):
        return dict(schedule=keras.saving.serialize_keras_object(self.schedule),
                    factor=self.factor, offset=self.offset)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
