"""GPU checks that need a prepared script (tools/gpu_check.sh runs them and writes the summary).

  python tools/gpu_check.py train DIR ARGS...   the trainer on 2 logical GPUs split from GPU 0
  python tools/gpu_check.py compare DIR_A DIR_B max |difference| of their latest checkpoints
"""

import json
import sys

from sknet_keras import cli  # noqa: F401  (before TensorFlow: quiet start-up)
import tensorflow as tf  # noqa: E402


def split_gpu(replicas=2, memory_mib=8192):
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        sys.exit("gpu_check: no GPU visible to TensorFlow")
    tf.config.set_logical_device_configuration(
        gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=memory_mib)] * replicas)


def compare(dir_a, dir_b):
    from sknet_keras.trainers.checkpoints import latest_checkpoint

    a, b = (tf.train.load_checkpoint(latest_checkpoint(d)) for d in (dir_a, dir_b))
    names = [n for n in a.get_variable_to_shape_map() if "OPTIMIZER_SLOT" not in n
             and not n.startswith("save_counter") and "_CHECKPOINTABLE_OBJECT_GRAPH" not in n]
    worst, differ = 0.0, 0
    for n in names:
        x, y = a.get_tensor(n), b.get_tensor(n)
        if x.dtype.kind == "f":
            d = float(abs(x.astype("float64") - y.astype("float64")).max()) if x.size else 0.0
            worst, differ = max(worst, d), differ + (d > 0)
    print(json.dumps({"variables": len(names), "differ": differ, "max_abs_diff": worst}))


if __name__ == "__main__":
    if sys.argv[1] == "train":
        split_gpu()
        from sknet_keras.trainers import train

        sys.argv = ["sknet_keras.trainers.train"] + sys.argv[2:]
        train.run()
    elif sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
