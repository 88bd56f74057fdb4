"""tf.distribute strategies by name, including N logical CPUs for multi-replica runs on CPU."""

import json
import os

import tensorflow as tf

def split_cpu(replicas):
    """Expose the CPU as `replicas` logical devices (before TensorFlow initializes devices)."""
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current and len(current) == replicas:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)])
    except RuntimeError as e:
        raise ValueError(
            f"{replicas} CPU replicas must be set before TensorFlow initializes its devices "
            f"({e})") from None


def check_cluster(name):
    """What a strategy needs from the environment, checked without building it."""
    if name == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("multi_worker_mirrored needs the TF_CONFIG environment variable "
                             "(cluster and task of this worker)")
        json.loads(os.environ["TF_CONFIG"])  # fail here, clearly, on malformed JSON


def make_strategy(name="default", cpu_replicas=1, tpu_address=None):
    """Build the `tf.distribute.Strategy` named `name` (configs.STRATEGIES; the config
    checks the names and the replica count)."""
    check_cluster(name)
    if name == "multi_worker_mirrored":
        if cpu_replicas > 1:
            split_cpu(cpu_replicas)
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING))
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if cpu_replicas > 1:
        split_cpu(cpu_replicas)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name != "mirrored":
        raise ValueError(f"unknown strategy {name!r}")
    if gpus:
        if len(gpus) > len(tf.config.list_physical_devices("GPU")):
            # Logical GPUs split from one device: NCCL refuses two ranks on one GPU.
            return tf.distribute.MirroredStrategy(
                [d.name for d in gpus],
                cross_device_ops=tf.distribute.HierarchicalCopyAllReduce())
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    # No NCCL on CPU: reduce through one device.
    return tf.distribute.MirroredStrategy(
        cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())


def is_chief(strategy):
    """True on the worker that writes checkpoints, logs and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0
                                            and "chief" not in resolver.cluster_spec().jobs)
