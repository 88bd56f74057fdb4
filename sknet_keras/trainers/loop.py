"""The training loop: a custom loop over `strategy.run`, in the TF Model Garden / Orbit style.

Why not `model.fit`: measured here with TF 2.21 / Keras 3.15, `fit` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585), cannot XLA-compile a step under
MirroredStrategy with two replicas (the whole `strategy.run` is compiled and reaches the
other replica's variables), and `BackupAndRestore` resumes at the start of the interrupted
epoch, not at the step. Here:

- the per-replica forward/backward is one function, XLA-compiled with `--jit_compile`; the
  optimizer update runs outside it, in the replica context (gradients are all-reduced);
- several steps run per `tf.function` call through a `tf.range` loop (`steps_per_loop`);
- `tf.train.CheckpointManager` saves model, optimizer and step after every loop; the data
  order is a function of (seed, epoch), so a resumed run skips the batches it had already
  trained on and ends at exactly the same step as an uninterrupted one.
"""

import dataclasses
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from sknet_keras.layers.selective_kernel import set_rematerialize
from sknet_keras.trainers import data as data_lib
from sknet_keras.trainers.strategy import is_chief


class Trainer:
    """Builds model and optimizer under `strategy`, trains, evaluates, checkpoints, exports."""

    def __init__(self, strategy, model_config, spec, pipeline, model_dir, *, global_batch_size,
                 epochs, steps_per_epoch, max_steps, schedule, optimizer_name="sgd",
                 weight_decay=1e-4, label_smoothing=0.1, precision="float32", jit_compile=False,
                 steps_per_loop=50, resume=True, sync_bn=False, rematerialize=False,
                 log=print):
        from sknet_keras.applications import build_model

        self.strategy = strategy
        self.spec = spec
        self.pipeline = pipeline
        self.model_dir = model_dir
        self.global_batch_size = global_batch_size
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.max_steps = max_steps
        self.steps_per_loop = max(1, steps_per_loop)
        self.log = log
        self.chief = is_chief(strategy)
        resolver = getattr(strategy, "cluster_resolver", None)
        self.task_id = getattr(resolver, "task_id", 0) or 0
        self.bad_images = data_lib.BadImageCounter()

        policy = {"float32": "float32", "bfloat16": "mixed_bfloat16",
                  "float16": "mixed_float16"}[precision]
        keras.mixed_precision.set_dtype_policy(policy)
        with strategy.scope():
            self.model = build_model(model_config, input_shape=(pipeline.image_size,) * 2 + (3,),
                                     classes=spec.num_classes, classifier_activation=None)
            for layer in self.model._flatten_layers():
                if sync_bn and isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
            if rematerialize:
                set_rematerialize(self.model)
            optimizer = make_optimizer(optimizer_name, schedule, weight_decay)
            if precision == "float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
            self.loss_fn = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=label_smoothing, reduction=None)
            sum_var = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                           aggregation=tf.VariableAggregation.SUM)
            self._loss_sum = tf.Variable(0.0, **sum_var)
            self._correct = tf.Variable(0.0, **sum_var)
            self._seen = tf.Variable(0.0, **sum_var)

        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        write_dir = model_dir if self.chief else tempfile.mkdtemp(prefix="sknet_worker_ckpt_")
        self._write_dir = write_dir
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(write_dir, "checkpoints"), max_to_keep=3,
            step_counter=self.optimizer.iterations)
        if resume:
            source = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
            if source:
                self.checkpoint.restore(source).assert_existing_objects_matched()
                log(f"resumed from {source} at step {self.step}")
        self.writer = tf.summary.create_file_writer(
            os.path.join(model_dir if self.chief else write_dir, "logs"))
        if jit_compile and sync_bn:
            raise ValueError("--jit_compile and --sync_bn cannot be combined: synchronized BN "
                             "all-reduces inside the step, which the XLA-compiled per-replica "
                             "function cannot contain")
        # Only a separate function when XLA-compiled: a nested tf.function cannot hold the
        # cross-replica synchronization of synchronized BN.
        self._forward_backward = (tf.function(self._forward_backward_impl, jit_compile=True)
                                  if jit_compile else self._forward_backward_impl)
        self._train_loop = tf.function(self._train_loop_impl)
        self._moving_stats = [w for w in self.model.non_trainable_weights
                              if w.path.endswith(("moving_mean", "moving_variance"))]
        self._sync_stats = (tf.function(self._sync_moving_stats_impl)
                            if strategy.num_replicas_in_sync > 1 and not sync_bn else None)
        self._eval_step = tf.function(self._eval_step_impl)

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    # --- replica functions ----------------------------------------------------------------

    def _forward_backward_impl(self, images, labels):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = self.loss_fn(labels, tf.cast(logits, tf.float32))
            loss = tf.nn.compute_average_loss(per_example,
                                              global_batch_size=self.global_batch_size)
            scaled = (self.optimizer.scale_loss(loss)
                      if hasattr(self.optimizer, "scale_loss") else loss)
        grads = tape.gradient(scaled, variables)
        return grads, per_example, logits

    def _replica_step(self, batch):
        images, labels = batch
        grads, per_example, logits = self._forward_backward(images, labels)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        self._accumulate(per_example, logits, labels)

    def _accumulate(self, per_example, logits, labels):
        self._loss_sum.assign_add(tf.reduce_sum(per_example))
        hits = tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1))
        self._correct.assign_add(tf.reduce_sum(tf.cast(hits, tf.float32)))
        self._seen.assign_add(tf.cast(tf.shape(labels)[0], tf.float32))

    def _train_loop_impl(self, iterator, steps):
        for _ in tf.range(steps):
            self.strategy.run(self._replica_step, args=(next(iterator),))

    def _sync_moving_stats_impl(self):
        """Average BN moving statistics over replicas (each replica updates its own copy).

        The moving averages are linear in the batch statistics, so averaging the replicas'
        copies after a loop equals averaging the batch statistics at every step.
        """
        # One flat vector: a single all-reduce (and MWMS cannot pack mixed shapes).
        local = self.strategy.run(
            lambda: tf.concat([tf.reshape(v.value, [-1]) for v in self._moving_stats], 0))
        flat = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None)
        sizes = [int(np.prod(v.shape)) for v in self._moving_stats]
        for v, m in zip(self._moving_stats, tf.split(flat, sizes)):
            v.assign(tf.reshape(m, v.shape))

    def _eval_step_impl(self, batch):
        def step(images, labels):
            logits = tf.cast(self.model(images, training=False), tf.float32)
            top5 = tf.math.in_top_k(tf.argmax(labels, -1), logits, 5)
            top1 = tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1))
            return (tf.reduce_sum(tf.cast(top1, tf.float32)),
                    tf.reduce_sum(tf.cast(top5, tf.float32)),
                    tf.cast(tf.shape(labels)[0], tf.float32))

        out = self.strategy.run(step, args=batch)
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in out]

    # --- driver ---------------------------------------------------------------------------

    def _read_and_reset(self):
        seen = float(self._seen.numpy())
        values = (float(self._loss_sum.numpy()) / max(seen, 1), float(self._correct.numpy())
                  / max(seen, 1), seen)
        for v in (self._loss_sum, self._correct, self._seen):
            v.assign(tf.zeros_like(v))
        return values

    def _save(self):
        self.manager.save(checkpoint_number=self.optimizer.iterations)

    def train(self):
        """Train to `max_steps` (or epochs × steps_per_epoch); returns the final metrics."""
        total = self.max_steps or self.epochs * self.steps_per_epoch
        history = {}
        while self.step < total:
            epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
            steps_this_epoch = min(self.steps_per_epoch, total - epoch * self.steps_per_epoch)
            dataset = data_lib.distributed_dataset(
                self.strategy, self.spec, self.spec.train_split, self.pipeline,
                self.global_batch_size, training=True, epoch=epoch, skip_batches=in_epoch,
                counter=self.bad_images)
            iterator = iter(dataset)
            bar = keras.utils.Progbar(steps_this_epoch, stateful_metrics=["loss", "acc", "img/s",
                                                                          "lr"])
            self.log(f"epoch {epoch + 1}/{math_ceil(total, self.steps_per_epoch)}")
            done = in_epoch
            bar.update(done)
            while done < steps_this_epoch:
                steps = min(self.steps_per_loop, steps_this_epoch - done)
                start = time.perf_counter()
                try:
                    self._train_loop(iterator, tf.constant(steps))
                except tf.errors.OutOfRangeError:
                    raise RuntimeError(
                        f"the training data ran out after {done} of {steps_this_epoch} steps "
                        f"of epoch {epoch + 1} (skipped corrupt images: "
                        f"{self.bad_images.count}); lower --steps_per_epoch") from None
                if self._sync_stats is not None:
                    self._sync_stats()
                elapsed = time.perf_counter() - start
                done += steps
                loss, acc, seen = self._read_and_reset()
                if not np.isfinite(loss):
                    raise FloatingPointError(f"training loss is {loss} at step {self.step}")
                lr = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
                rate = steps * self.global_batch_size / elapsed
                bar.update(done, [("loss", loss), ("acc", acc), ("img/s", rate), ("lr", lr)])
                with self.writer.as_default(step=self.step):
                    tf.summary.scalar("train/loss", loss)
                    tf.summary.scalar("train/accuracy", acc)
                    tf.summary.scalar("train/images_per_second", rate)
                    tf.summary.scalar("train/learning_rate", lr)
                self._save()
                history.update(loss=loss, accuracy=acc)
            if self.spec.eval_examples and (done == self.steps_per_epoch or self.step >= total):
                history.update(self.evaluate())
        if self.bad_images.count:
            self.log(f"skipped {self.bad_images.count} corrupt image(s) (named above)")
        history["skipped_images"] = self.bad_images.count
        history["weights_checksum"] = self.weights_checksum()
        return history

    def weights_checksum(self):
        """Order-sensitive digest of all weights: equal on every worker of one run."""
        total = 0.0
        for i, w in enumerate(self.model.weights):
            total += float(np.sum(np.asarray(w.numpy(), np.float64)) * (i + 1))
        return total

    def evaluate(self, image_size=None):
        """Top-1 / top-5 on the eval split (centre crop); logged to TensorBoard."""
        pipeline = self.pipeline
        if image_size and image_size != pipeline.image_size:
            pipeline = dataclasses.replace(pipeline, image_size=image_size)
        dataset = data_lib.distributed_dataset(self.strategy, self.spec, self.spec.eval_split,
                                               pipeline, self.global_batch_size, training=False,
                                               counter=self.bad_images)
        top1 = top5 = count = 0.0
        for batch in dataset:
            a, b, n = (float(v.numpy()) for v in self._eval_step(batch))
            top1, top5, count = top1 + a, top5 + b, count + n
        result = {"val_top1": top1 / max(count, 1), "val_top5": top5 / max(count, 1),
                  "val_examples": int(count)}
        self.log(f"evaluation at step {self.step}: top-1 {result['val_top1']:.4f}, top-5 "
                 f"{result['val_top5']:.4f} on {int(count)} images")
        with self.writer.as_default(step=self.step):
            tf.summary.scalar("eval/top1", result["val_top1"])
            tf.summary.scalar("eval/top5", result["val_top5"])
        return result

    def export(self):
        """Weights file and SavedModel (`model.export`) in model_dir; chief only."""
        from sknet_keras.applications.weights import save_weights

        if not self.chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
            return None
        save_weights(self.model, os.path.join(self.model_dir, "final.weights.h5"))
        path = os.path.join(self.model_dir, "saved_model")
        tmp = path + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.export(tmp, format="tf_saved_model", verbose=False)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return path


def math_ceil(a, b):
    return -(-a // b)


def make_optimizer(name, schedule, weight_decay):
    """SGD with momentum 0.9 (the papers), or AdamW / RMSprop; no decay on BN and biases."""
    if name == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=weight_decay or None)
    elif name == "adamw":
        opt = keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    elif name == "rmsprop":
        opt = keras.optimizers.RMSprop(schedule, momentum=0.9, weight_decay=weight_decay or None)
    else:
        raise ValueError(f"--optimizer: unknown optimizer {name!r}; expected sgd, adamw, rmsprop")
    if weight_decay:
        opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return opt
