"""The package's commands as users run them, for the tests that start them as processes.

TF_CPP_MIN_LOG_LEVEL is unset, as in a user's shell: the commands quiet TensorFlow's
start-up themselves (`sknet_keras.cli`), and a test that set it would tell them that the
user chose a log level. Output is unbuffered so that a killed command's last lines show."""

import json
import os
import subprocess
import sys

ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
ENV["PYTHONUNBUFFERED"] = "1"
TRAIN = [sys.executable, "-m", "sknet_keras.trainers.train"]
EVALUATE = [sys.executable, "-m", "sknet_keras.trainers.evaluate"]


def run(cmd, check=True, timeout=600, env=ENV):
    """The finished process of `cmd`; with `check`, AssertionError with its output if it
    failed."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_train(args, timeout=600, check=True):
    return run(TRAIN + list(args), check=check, timeout=timeout)


def result(model_dir, name="result.json"):
    """A run's result.json (or another of its JSON records)."""
    with open(os.path.join(model_dir, name)) as f:
        return json.load(f)
