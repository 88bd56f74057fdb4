"""A run's TensorBoard summaries (`model_dir/logs`): each loop's training figures and each
evaluation. The writer is created on first use, so that re-running a finished run writes
nothing."""

import tensorflow as tf


class Summaries:
    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def training(self, step, loss, accuracy, images_per_second, learning_rate):
        with self.writer.as_default(step=step):
            tf.summary.scalar("train/loss", loss)
            tf.summary.scalar("train/accuracy", accuracy)
            tf.summary.scalar("train/images_per_second", images_per_second)
            tf.summary.scalar("train/learning_rate", learning_rate)

    def evaluation(self, step, top1, top5):
        with self.writer.as_default(step=step):
            tf.summary.scalar("eval/top1", top1)
            tf.summary.scalar("eval/top5", top5)
