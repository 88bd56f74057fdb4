"""Dependencies point one way (docs/architecture.md): the import-linter contracts in
pyproject.toml, over every import in the package, function-level ones included."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_are_kept():
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    proc = subprocess.run([sys.executable, "-c", command], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout and "4 kept" in proc.stdout


def test_the_architecture_doc_states_the_contracts_pyproject_checks():
    """docs/architecture.md lists each import-linter contract's layers as pyproject has them."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        contracts = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    with open(os.path.join(ROOT, "docs", "architecture.md")) as f:
        doc = f.read()
    for contract in contracts:
        container = (contract.get("containers") or ["sknet_keras.package"])[0]
        layers = [", ".join(m.strip().removeprefix("sknet_keras.") for m in layer.split("|"))
                  for layer in contract["layers"]]
        line = f"{container.removeprefix('sknet_keras.')}: " + " → ".join(layers)
        assert line in doc, line


def test_no_function_of_the_trainer_grows_past_60_lines():
    """The trainer in parts (issue: one trainer class did everything): a function of
    `trainers/` over 60 lines is doing several things."""
    import ast

    long = []
    folder = os.path.join(ROOT, "sknet_keras", "trainers")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as f:
                tree = ast.parse(f.read())
            long += [f"{name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
                     for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                     and node.end_lineno - node.lineno + 1 > 60]
    assert not long, long


def test_no_module_grows_past_400_lines():
    """One idea per module: a module over ~400 lines is doing two things."""
    long = []
    for folder, _, files in os.walk(os.path.join(ROOT, "sknet_keras")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    n = sum(1 for _ in f)
                if n > 400:
                    long.append(f"{os.path.relpath(path, ROOT)}: {n}")
    assert not long, long


def test_importing_the_package_has_no_side_effects():
    """`import sknet_keras` (and its command packages) loads no TensorFlow, no absl flags and
    leaves file descriptor 2 alone, whatever sys.argv says; only the `python -m` entry
    modules import sknet_keras.cli."""
    script = (
        "import os, sys\n"
        "sys.argv[:] = ['-m']\n"
        "before = os.fstat(2)\n"
        "import sknet_keras, sknet_keras.trainers, sknet_keras.convert, sknet_keras.analysis\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras', 'absl.flags', 'sknet_keras.cli')\n"
        "                if m in sys.modules)\n"
        "after = os.fstat(2)\n"
        "print(loaded, (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino),\n"
        "      os.environ.get('TF_ENABLE_ONEDNN_OPTS'), os.environ.get('TF_CPP_MIN_LOG_LEVEL'),\n"
        "      os.environ.get('TF_CPU_ALLOCATOR_USE_BFC'))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL",
                        "TF_CPU_ALLOCATOR_USE_BFC")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[]", "True", "None", "None", "None"], proc.stdout


_SNAPSHOT_CHILD = r'''
import importlib, json, logging, os, sys, warnings
import keras, tensorflow as tf
{preload}

def fds():
    out = {{}}
    for fd in sorted(os.listdir("/proc/self/fd")):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{{fd}}")
        except OSError:
            pass
    return out

def snapshot():
    return {{
        "environ": dict(os.environ),
        "fds": {{k: v for k, v in fds().items() if "/proc/" not in v}},
        "fd2": list(os.fstat(2)[:2]) if True else None,
        "tf.config": [tf.config.threading.get_inter_op_parallelism_threads(),
                      tf.config.threading.get_intra_op_parallelism_threads(),
                      tf.config.get_soft_device_placement(),
                      tf.config.functions_run_eagerly(),
                      tf.config.optimizer.get_jit(),
                      sorted(tf.config.optimizer.get_experimental_options().items()),
                      [d.name for d in tf.config.get_visible_devices()]],
        "keras.config": [keras.config.backend(), keras.config.floatx(),
                         keras.config.image_data_format(), keras.config.epsilon(),
                         str(keras.config.dtype_policy().name)],
        "logging": [logging.getLogger().level, tf.get_logger().level,
                    logging.getLogger("absl").level],
        "warnings.filters": len(warnings.filters),
    }}

changed = {{}}
for name in {modules!r}:
    before = snapshot()
    importlib.import_module(name)
    after = snapshot()
    diff = {{k: [before[k], after[k]] for k in before if before[k] != after[k]}}
    if "environ" in diff:
        b, a = diff["environ"]
        diff["environ"] = {{k: [b.get(k), a.get(k)] for k in set(a) | set(b) if a.get(k) != b.get(k)}}
    if "fds" in diff:
        b, a = diff["fds"]
        diff["fds"] = {{k: [b.get(k), a.get(k)] for k in set(a) | set(b) if a.get(k) != b.get(k)}}
    if diff:
        changed[name] = diff
print(json.dumps(changed, default=str))
'''


def test_importing_the_library_changes_nothing_in_the_users_process():
    """A user's process, TensorFlow and Keras already imported: importing each public module
    leaves the environment, the open file descriptors (fd 2 included), TensorFlow's and Keras'
    settings and the log levels as they were."""
    import importlib.util

    modules = ["sknet_keras", "sknet_keras.layers", "sknet_keras.models", "sknet_keras.registry",
               "sknet_keras.applications", "sknet_keras.weights", "sknet_keras.convert",
               "sknet_keras.trainers", "sknet_keras.analysis"]
    preload = ""
    if importlib.util.find_spec("keras_hub") is not None:
        modules.append("sknet_keras.hub")
        preload = "import keras_hub"  # its own start-up is not ours to judge
    script = _SNAPSHOT_CHILD.format(modules=modules, preload=preload)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CPU_ALLOCATOR_USE_BFC",
                        "TF_CPU_BFC_MEM_LIMIT_IN_MB")}
    proc = subprocess.run([sys.executable, "-c", script], cwd="/", capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    changed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert changed == {}, changed
