"""The generic loop: runs a task's steps under a strategy, checkpoints, summarizes, evaluates.

A custom loop over `strategy.run` in the TF Model Garden / Orbit style. Why not `model.fit`:
with TF 2.21 / Keras 3.15, `fit` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585), cannot XLA-compile a step under MirroredStrategy with two replicas
(the whole `strategy.run` is compiled and reaches the other replica's variables), and
`BackupAndRestore` resumes at the start of the interrupted epoch, not at the step. Here:

- the per-replica forward/backward is one function, XLA-compiled with `--jit_compile`; the
  optimizer update runs outside it, in the replica context (gradients are all-reduced);
- several steps run per `tf.function` call through a `tf.range` loop (`steps_per_loop`);
- `tf.train.CheckpointManager` saves model, optimizer and step after every loop; restoring
  checks that every variable of both was in the checkpoint. The data order and every random
  draw of the input pipeline are functions of (seed, epoch, position), so a resumed run
  trains on exactly the batches it had not trained on yet.
- SIGTERM / SIGINT stop the loop before its next step (`preemption`): the step is
  checkpointed; a resumed run finishes that loop where it would have ended.
- The training figures are sums over the epoch so far (every checkpoint's progress record
  carries each replica's sums), so result.json's `train_*_last_epoch` figures are the same
  however the steps are grouped into loops and wherever a run was stopped and resumed.
"""

import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from sknet_keras.layers.accel import trace_scope
from sknet_keras.trainers import (checkpoints, divergence, exports, pipeline, preemption,
                                  run_files)
from sknet_keras.trainers.checkpoints import CHECKPOINT_SUBDIR
from sknet_keras.trainers.configs import DEFAULT_EXPORTS, EXPORT_FILES
from sknet_keras.trainers.datasets import DataError
from sknet_keras.trainers.progress import progress_bar
from sknet_keras.trainers.replica_sums import ReplicaSums
from sknet_keras.trainers.strategy import is_chief
from sknet_keras.trainers.summaries import Summaries

def run_evaluation(strategy, task, model, counter=None):
    """(top-1, top-5, examples) of `model` on the task's evaluation split."""
    def evaluate_batch(batch):
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for v in strategy.run(task.validation_step, args=(batch, model))]

    step = tf.function(trace_scope.traced_in_process(evaluate_batch))  # never exported
    top1 = top5 = count = 0.0
    dataset = task.build_inputs(strategy, training=False, counter=counter)
    for batch in pipeline.stop_on_bad_image(dataset):
        a, b, n = (float(v.numpy()) for v in step(batch))
        top1, top5, count = top1 + a, top5 + b, count + n
    return top1 / max(count, 1), top5 / max(count, 1), int(count)


class Trainer:
    """Builds model and optimizer under `strategy`, trains, evaluates, checkpoints, exports."""

    def __init__(self, task, strategy, model_dir, resume=True, log=print):
        self.task = task
        self.strategy = strategy
        self.model_dir = model_dir
        self.log = log
        self.chief = is_chief(strategy)
        resolver = getattr(strategy, "cluster_resolver", None)
        self.task_id = getattr(resolver, "task_id", 0) or 0
        self.bad_images = pipeline.BadImageCounter()
        schedule = task.config.schedule
        self.global_batch_size = schedule.batch_size
        self.steps_per_loop = schedule.steps_per_loop

        with strategy.scope():
            self.model = task.build_model()
            self.optimizers = task.build_optimizers()
            for optimizer in self.optimizers.values():
                optimizer.build(self.model.trainable_variables)
            self.optimizer = self.optimizers["optimizer"]
            self.metrics = task.build_metrics()
        # Every step run, counted in the graph (the signal watcher reads it live); not the
        # optimizer's iterations, which skip float16 overflow steps (data would repeat and a
        # resume drift). Kept as the checkpoint's number, ckpt-N.
        self._step = tf.Variable(0, dtype=tf.int64, trainable=False, name="trainer_step")

        if self.chief:
            run_files.remove_partial_files(model_dir)  # a killed run's half-written files
        self.checkpoint = tf.train.Checkpoint(model=self.model, **self.optimizers)
        write_dir = model_dir if self.chief else tempfile.mkdtemp(prefix="sknet_worker_ckpt_")
        self._write_dir = write_dir
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(write_dir, CHECKPOINT_SUBDIR), max_to_keep=3,
            step_counter=self._step)
        self.resumed_from = (checkpoints.restore_newest(self.checkpoint, model_dir, log)
                             if resume else None)
        if self.resumed_from:
            self._step.assign(checkpoints.step_of(self.resumed_from))
        self.last_checkpoint = self.resumed_from  # the newest good one
        self._multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.sums = ReplicaSums(strategy, self.metrics)
        record = checkpoints.read_progress(self.resumed_from) if self.resumed_from else None
        self.sums.restore((record or {}).get("epoch_sums"))
        self.stop = preemption.StopSignal(step=lambda: self.step, log=log)
        # TPU: the flag is read between loops only (a host variable inside the TPU loop is
        # untried here); everywhere else before each step.
        self._stop_each_step = not isinstance(strategy, tf.distribute.TPUStrategy)
        self._stop_requested = tf.function(self._stop_requested_impl)
        if not self.resumed_from and task.config.model.weights:
            log(f"initialized every layer but the new classifier from "
                f"{task.config.model.weights}")
        self.summaries = Summaries(os.path.join(model_dir if self.chief else write_dir, "logs"))
        # Only a separate function when XLA-compiled: a nested tf.function cannot hold the
        # cross-replica synchronization of synchronized BN.
        self._frozen = None
        self._set_frozen(*task.trainable_phase(self.step))
        self._moving_stats = [w for w in self.model.non_trainable_weights
                              if w.path.endswith(("moving_mean", "moving_variance"))]
        self._average_stats = (strategy.num_replicas_in_sync > 1
                               and not task.config.model.sync_bn)

    def _set_frozen(self, frozen, until=None):
        """Apply the task's trainable phase (fine-tuning: the pretrained layers frozen until
        step `until`); (re)trace the step functions, whose variable lists change with it."""
        if frozen == self._frozen:
            return
        if self._frozen is not None or frozen:
            self.task.set_backbone_trainable(self.model, not frozen)
            # Mid-epoch (unfreezing), the progress bar's line is still open: end it first.
            self.log(("\n" if not frozen and self.step else "")
                     + f"step {self.step}: the pretrained layers are "
                     + (f"frozen until step {until}" if frozen else
                        "unfrozen"))
        self._frozen = frozen
        self._forward_backward = None
        if self.task.config.runtime.jit_compile:
            compiled = tf.function(lambda images, labels: self.task.forward_backward(
                self.model, self.optimizer, images, labels), jit_compile=True)
            self._forward_backward = lambda model, optimizer, images, labels: compiled(
                images, labels)
        self._train_loop = tf.function(trace_scope.traced_in_process(self._train_loop_impl))

    @property
    def step(self):
        return int(self._step.numpy())

    @property
    def complete(self):
        return self.step >= self.task.total_steps

    # --- replica functions ----------------------------------------------------------------

    def _replica_step(self, batch):
        per_example, hits = self.task.train_step(batch, self.model, self.optimizers,
                                                 self._forward_backward)
        self.task.update_metrics(self.metrics, per_example, hits)

    def _train_loop_impl(self, iterator, steps):
        """Returns the steps run (the optimizer's count skips float16 overflow steps)."""
        ran = tf.constant(0)
        for _ in tf.range(steps):
            if self._stop_each_step and self._stop_requested_impl():
                break  # a signal: stop before this step (see preemption)
            self.strategy.run(self._replica_step, args=(next(iterator),))
            if self._average_stats:
                self._sync_moving_stats_impl()
            if self._stop_each_step:  # (TPU: the host variable is counted after the loop)
                self._step.assign_add(1)
            ran += 1
        if not self._stop_each_step:
            self._step.assign_add(tf.cast(ran, tf.int64))
        return ran

    def _stop_requested_impl(self):
        """The stop flag, summed over the workers: every worker stops at the same step."""
        flag = tf.cast(self.stop.flag, tf.int32)
        if self._multi_worker:
            flag = self.strategy.reduce(tf.distribute.ReduceOp.SUM,
                                        self.strategy.run(lambda: tf.identity(flag)), axis=None)
        return flag > 0

    def _sync_moving_stats_impl(self):
        """Average BN moving statistics over replicas (each replica updates its own copy)
        after every step, not every loop, so that a run stopped between any two steps holds
        the values of one never stopped, to the bit (the BN statistics only: SKNet-50's are
        0.3 % of its gradients)."""
        # One flat vector: a single all-reduce (and MWMS cannot pack mixed shapes).
        local = self.strategy.run(
            lambda: tf.concat([tf.reshape(v.value, [-1]) for v in self._moving_stats], 0))
        flat = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None)
        sizes = [int(np.prod(v.shape)) for v in self._moving_stats]
        for v, m in zip(self._moving_stats, tf.split(flat, sizes)):
            v.assign(tf.reshape(m, v.shape))

    # --- driver ---------------------------------------------------------------------------

    def _preempted(self, checkpoint):
        names = self.stop.received
        status = (preemption.exit_status(names[0]) if names else preemption.PEER_STATUS)
        cause = names[0] if names else "another worker's signal"
        return preemption.Preempted(
            f"stopped by {cause} at step {self.step}: "
            + (f"saved {checkpoint}" if checkpoint else "no checkpoint was written yet")
            + "; run the same command again to resume", status)

    def _run_loop(self, iterator, steps, epoch, done, steps_this_epoch):
        try:
            return int(self._train_loop(iterator, tf.constant(steps)))
        except tf.errors.OutOfRangeError:
            skipped = self.bad_images.count
            if skipped and done == 0:
                raise DataError(
                    f"no training image could be read in epoch {epoch + 1}: {skipped} "
                    "corrupt or undecodable image(s) skipped (named above), none left to "
                    "train on") from None
            raise DataError(
                f"the training data ran out after {done} of {steps_this_epoch} steps of epoch "
                f"{epoch + 1}" + (f" ({skipped} corrupt image(s) skipped, named above)"
                                  if skipped else "") + "; lower --steps_per_epoch") from None
        except tf.errors.InvalidArgumentError as e:
            raise pipeline.bad_image_error(e) from None

    def train(self):
        """Train to the task's total steps; returns the final metrics. A signal stops it
        with the step in progress checkpointed (`preemption.Preempted`)."""
        with self.stop:
            return self._train()

    def _train(self):
        total, per_epoch = self.task.total_steps, self.task.steps_per_epoch
        history = {}
        while self.step < total:
            epoch, in_epoch = divmod(self.step, per_epoch)
            saved, record = self._train_epoch(epoch, in_epoch, history)
            done = min(per_epoch, total - epoch * per_epoch)
            if self.task.spec.eval_examples and (done == per_epoch or self.step >= total):
                history.update(self.evaluate())
                if saved and self.chief:  # the record of the checkpoint just saved gains the figures
                    checkpoints.write_progress(saved, dict(record, **history))
        if self.bad_images.count:
            self.log(f"skipped {self.bad_images.count} corrupt image(s) (named above)")
        history["skipped_images"] = self.bad_images.count
        return self.final_history(history)

    def _train_epoch(self, epoch, in_epoch, history):
        """Train epoch `epoch` from its step `in_epoch` to its end (or the run's), one loop
        at a time, each checkpointed; `history` gains the figures. Returns the last
        checkpoint saved and its progress record."""
        total, per_epoch = self.task.total_steps, self.task.steps_per_epoch
        steps_this_epoch = min(per_epoch, total - epoch * per_epoch)
        iterator = iter(self.task.build_inputs(self.strategy, training=True, epoch=epoch,
                                               skip_batches=in_epoch, counter=self.bad_images))
        if in_epoch == 0:  # (resumed midway, the checkpoint's sums are this epoch's)
            self.sums.reset()
        before = self.sums.read()
        bar = progress_bar(steps_this_epoch, ["loss", "acc", "img/s", "lr"])
        self.log(f"epoch {epoch + 1}/{-(-total // per_epoch)}")
        done, saved, record = in_epoch, None, None
        bar.update(done)
        while done < steps_this_epoch:
            if bool(self._stop_requested()):  # e.g. signalled during an evaluation
                raise self._preempted(self.last_checkpoint)
            # Loops end at multiples of steps_per_loop in the epoch, also when resumed from
            # a stop midway through one.
            steps = min(self.steps_per_loop - done % self.steps_per_loop,
                        steps_this_epoch - done)
            frozen, until = self.task.trainable_phase(self.step)
            self._set_frozen(frozen, until)
            if until is not None:  # the loop ends where the phase does
                steps = min(steps, until - self.step)
            start = time.perf_counter()
            steps = self._run_loop(iterator, steps, epoch, done, steps_this_epoch)
            elapsed = time.perf_counter() - start
            stopping = bool(self._stop_requested())
            done += steps
            saved, record, before = self._after_loop(steps, elapsed, before, history, bar, done)
            if stopping:
                raise self._preempted(saved)
        return saved, record

    def _after_loop(self, steps, elapsed, before, history, bar, done):
        """A loop's figures (progress bar, TensorBoard, `history`), the divergence check,
        then its checkpoint. Returns (checkpoint, its progress record, the sums now)."""
        sums = self.sums.read()
        seen = max(sums[2] - before[2], 1)
        loss, acc = (sums[0] - before[0]) / seen, (sums[1] - before[1]) / seen
        if not steps:  # stopped before the loop's first step: nothing new to save
            raise self._preempted(self.last_checkpoint)
        # Before the save: the last checkpoint stays one of finite weights.
        divergence.check(loss, self.model, self.step, steps, self.last_checkpoint)
        lr = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
        rate = steps * self.global_batch_size / elapsed
        bar.update(done, [("loss", loss), ("acc", acc), ("img/s", rate), ("lr", lr)])
        self.summaries.training(self.step, loss, acc, rate, lr)
        history.update(train_loss_last_epoch=sums[0] / max(sums[2], 1),
                       train_top1_last_epoch=sums[1] / max(sums[2], 1),
                       train_examples_last_epoch=int(sums[2]))
        record = dict(self._progress(history), epoch_sums=self.sums.per_replica())
        saved = checkpoints.save(self.manager, self.step, record, previous=self.last_checkpoint)
        self.last_checkpoint = saved
        return saved, record, sums

    def _progress(self, history):
        return dict(history, step=self.step, skipped_images=self.bad_images.count)

    def final_history(self, history):
        """What result.json records of the finished run (`history`: of train() or of the
        last checkpoint's progress record)."""
        history = {k: v for k, v in history.items() if k not in ("step", "epoch_sums")}
        history["skipped_images"] = history.get("skipped_images", self.bad_images.count)
        history["weights_checksum"] = self.weights_checksum()
        if not np.isfinite(history["weights_checksum"]):
            raise FloatingPointError(f"the weights are not finite at step {self.step}: training "
                                     f"diverged ({divergence.ADVICE})")
        return history

    def weights_checksum(self):
        """Order-sensitive digest of all weights: equal on every worker of one run."""
        total = 0.0
        for i, w in enumerate(self.model.weights):
            total += float(np.sum(np.asarray(w.numpy(), np.float64)) * (i + 1))
        return total

    def evaluate(self, summaries=True):
        """Top-1 / top-5 on the evaluation split (centre crop); logged to TensorBoard."""
        top1, top5, count = run_evaluation(self.strategy, self.task, self.model,
                                           self.bad_images)
        result = {"val_top1": top1, "val_top5": top5, "val_examples": count}
        self.log(f"evaluation at step {self.step}: top-1 {top1:.4f}, top-5 {top5:.4f} on "
                 f"{count} images")
        if summaries:
            self.summaries.evaluation(self.step, top1, top5)
        return result

    def export(self, formats=DEFAULT_EXPORTS):
        """Write `formats` (`exports.EXPORTS`' names) into model_dir (chief only); returns
        their records {file name: {"bytes", "sha256"}}; a signal stops it between two."""
        if not self.chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
            return {}
        records = {}
        for name in formats:
            file_name = EXPORT_FILES[name]
            if self.stop.requested:
                raise preemption.Preempted(
                    f"stopped by {self.stop.received[0]} before writing {file_name}: the run "
                    f"is complete at step {self.step}; run the same command again to write "
                    "its exports", preemption.exit_status(self.stop.received[0]))
            records[file_name] = exports.write(self.model, self.model_dir, name)
        return records
