"""The training loop's progress display: Keras' `Progbar` on a terminal, plain lines elsewhere.

Written by hand because `Progbar` writes ANSI colour codes, and on every POSIX system also
backspaces and carriage returns, whatever stdout is. Those codes litter a log file, a pipe
and a CI console. Where stdout is neither a terminal nor Jupyter, `PlainProgress` prints one
line per update instead, with the same figures.
"""

import sys
import time

import keras
import numpy as np


def progress_bar(target, stateful_metrics):
    """A progress display of `target` steps for this process's stdout."""
    isatty = getattr(sys.stdout, "isatty", None)
    if (isatty is not None and isatty()) or "ipykernel" in sys.modules:
        return keras.utils.Progbar(target, stateful_metrics=stateful_metrics)
    return PlainProgress(target)


def _shown(value):
    value = float(np.mean(keras.ops.convert_to_numpy(value)))  # as Progbar: a mean
    return f"{value:.4f}" if abs(value) > 1e-3 else f"{value:.4e}"


class PlainProgress:
    """`Progbar.update(current, values)` as one line: `12/90 - 31s - loss: 0.5321 - ...`."""

    def __init__(self, target):
        self.target = target
        self.start = time.perf_counter()

    def update(self, current, values=None, finalize=None):
        if not values:  # the epoch's opening call: nothing measured yet
            return
        fields = "".join(f" - {name}: {_shown(value)}" for name, value in values)
        print(f"{current}/{self.target} - {time.perf_counter() - self.start:.0f}s{fields}",
              flush=True)
