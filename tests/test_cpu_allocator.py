"""`sknet_keras.use_caching_allocator()` (the commands call it; importing never does) chooses
TensorFlow's caching CPU allocator only where it acts and the user left the choice open
(`sknet_keras.cpu_allocator`).

Each case runs in a fresh process: TensorFlow fixes its allocator when its first op runs. A
pooled allocator is the one that has statistics: `get_memory_info("CPU:0")` answers for
the BFC pool (and for oneDNN's own), and raises for plain `malloc`.
"""

import json
import os
import subprocess
import sys

import pytest

# Each case starts TensorFlow in a subprocess (the large tier's kind of test).
pytestmark = pytest.mark.large

_CHILD = """
import json, os, sys
import tensorflow as tf
if {op_first}:
    tf.constant(1.0) + 1.0  # the user's own op, before the layers are imported
import sknet_keras, sknet_keras.layers
sknet_keras.use_caching_allocator()
from sknet_keras import cpu_allocator
from sknet_keras.layers.accel import kernel_support
y = tf.reduce_sum(tf.ones((256, 1024, 1024)))  # 1 GiB, from whichever allocator was chosen
try:
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
except ValueError:  # no statistics: TensorFlow's plain malloc allocator
    peak = None
print(json.dumps({{"onednn": kernel_support.onednn_enabled(), "peak": peak, "sum": float(y),
                  "use_bfc": os.environ.get(cpu_allocator.USE_BFC),
                  "limit_mb": os.environ.get(cpu_allocator.LIMIT_MB)}}))
"""


MARKER = "SKNET_KERAS_CHOSE_CPU_ALLOCATOR"


def _memtotal_mb():
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemTotal:"))


def _child(env_vars, op_first=False):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPU_ALLOCATOR_USE_BFC", "TF_CPU_BFC_MEM_LIMIT_IN_MB", MARKER)}
    env.update(env_vars)
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(op_first=op_first)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_eigen_kernels_get_the_caching_allocator_with_the_machines_memory_as_limit():
    got = _child({"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert got["onednn"] is False and got["sum"] == 256 * 1024 * 1024
    assert got["use_bfc"] == "true"
    assert got["peak"] is not None and got["peak"] >= 1 << 30  # the pool served the 1 GiB
    if os.path.exists("/proc/meminfo"):
        assert abs(int(got["limit_mb"]) - _memtotal_mb()) <= 1  # the machine's memory


@pytest.mark.parametrize("case", ["user_chose_malloc", "op_before_import"])
def test_the_allocator_is_left_alone_where_the_user_chose_or_tensorflow_started(case):
    if case == "user_chose_malloc":
        got = _child({"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPU_ALLOCATOR_USE_BFC": "false"})
        assert got["use_bfc"] == "false"
    else:  # too late to act: setting the variable would only mislead
        got = _child({"TF_ENABLE_ONEDNN_OPTS": "0"}, op_first=True)
        assert got["use_bfc"] is None
    assert got["onednn"] is False and got["peak"] is None  # still malloc
    assert got["sum"] == 256 * 1024 * 1024


def test_the_onednn_kernels_keep_their_own_pool_also_in_a_child_of_an_eigen_process():
    got = _child({"TF_ENABLE_ONEDNN_OPTS": "1"})
    assert got["onednn"] is True and got["use_bfc"] is None and got["limit_mb"] is None
    assert got["sum"] == 256 * 1024 * 1024
    # What a child inherits from a parent that chose the pool on the Eigen kernels:
    inherited = {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPU_BFC_MEM_LIMIT_IN_MB": "1234",
                 MARKER: "TF_CPU_ALLOCATOR_USE_BFC,TF_CPU_BFC_MEM_LIMIT_IN_MB"}
    got = _child({"TF_ENABLE_ONEDNN_OPTS": "1", **inherited})
    assert got["onednn"] is True and got["use_bfc"] is None and got["limit_mb"] is None
    got = _child({"TF_ENABLE_ONEDNN_OPTS": "0", **inherited})  # an Eigen child keeps it
    assert got["use_bfc"] == "true" and got["limit_mb"] == "1234" and got["peak"] >= 1 << 30


def test_called_too_late_it_warns_and_changes_nothing():
    code = ("import os, warnings\nimport keras, tensorflow as tf\ntf.constant(1.0) + 1.0\n"
            "import sknet_keras\nwarnings.simplefilter('error', RuntimeWarning)\n"
            "try:\n    sknet_keras.use_caching_allocator()\nexcept RuntimeWarning as w:\n"
            "    print('WARNED', w)\nprint(os.environ.get('TF_CPU_ALLOCATOR_USE_BFC'))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPU_ALLOCATOR_USE_BFC", "TF_CPU_BFC_MEM_LIMIT_IN_MB", MARKER)}
    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("WARNED") and "before anything runs" in lines[-2], proc.stdout
    assert lines[-1] == "None"
