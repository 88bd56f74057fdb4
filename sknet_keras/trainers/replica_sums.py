"""The epoch's training figures as sums per replica (loss, correct, seen), so that
result.json's `train_*_last_epoch` are the same however the steps were grouped into loops
and wherever a run was stopped and resumed: every checkpoint's progress record carries each
replica's sums, and a resumed run puts them back."""

import tensorflow as tf


class ReplicaSums:
    def __init__(self, strategy, metrics):
        self.strategy, self.metrics = strategy, metrics

    def read(self):
        """(loss sum, correct, seen) over every replica's examples of this epoch so far."""
        return tuple(float(self.metrics[name].numpy()) for name in ("loss_sum", "correct",
                                                                    "seen"))

    def reset(self):
        for v in self.metrics.values():
            v.assign(tf.zeros_like(v))

    def _gather_impl(self):
        """[replicas, 1 + metrics]: each replica's id and metric sums, from every worker."""
        def local():
            ctx = tf.distribute.get_replica_context()
            return tf.stack([tf.cast(ctx.replica_id_in_sync_group, tf.float32)]
                            + [tf.identity(v) for v in self.metrics.values()])[None]

        return self.strategy.gather(self.strategy.run(local), axis=0)

    def per_replica(self):
        """Every replica's metric sums, by replica id (under MultiWorkerMirroredStrategy an
        all-gather, which every worker reaches together)."""
        rows = sorted(tf.function(self._gather_impl)().numpy().tolist())
        return {name: [row[i + 1] for row in rows] for i, name in enumerate(self.metrics)}

    def restore(self, sums):
        """Put back a checkpoint's per-replica sums; nothing if there are none, or they are of
        another replica count (the loop's figures then start from here)."""
        replicas = self.strategy.num_replicas_in_sync
        if not sums or any(len(sums.get(name, ())) != replicas for name in self.metrics):
            return
        strategy = self.strategy
        ids = strategy.experimental_local_results(tf.function(lambda: strategy.run(
            lambda: tf.identity(tf.distribute.get_replica_context().replica_id_in_sync_group)
        ))())
        for name, v in self.metrics.items():
            for component, replica in zip(strategy.experimental_local_results(v), ids):
                component.assign(sums[name][int(replica)])
