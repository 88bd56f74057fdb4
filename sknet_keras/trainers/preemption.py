"""Preemption: SIGTERM (what cloud schedulers send before reclaiming a machine) or SIGINT
stops a training run after the step in progress, with a checkpoint of that step, and the
command exits with status 128 + the signal's number (143 for SIGTERM, 130 for SIGINT).

Why not `tf.distribute.experimental.PreemptionCheckpointHandler`: it adds a variable of its
own to the checkpoint and restores through the CheckpointManager's state file, which would
bypass `checkpoints.restore_newest` (damaged checkpoints skipped, every variable checked);
and it exits from inside the step with `sys.exit(42)`. The equivalent here:

- A Python signal handler runs only once the main thread is back in Python, which inside a
  `steps_per_loop` call is after the loop's last step. So the interpreter's C-level handler
  writes the signal to a wakeup fd (`signal.set_wakeup_fd`), a watcher thread reads it and
  sets `flag`, a variable the training loop's graph reads before every step.
- Under MultiWorkerMirroredStrategy the loop sums the workers' flags (one scalar all-reduce
  per step, `Trainer._stop_requested`): every worker stops at the same step, whichever was
  signalled, and exits with the same status.
- A second signal while the checkpoint is being written changes nothing: the save
  completes (and had it not, TensorFlow writes a checkpoint under a temporary name and
  deletes older ones only after it is complete). A third ends the process at once, with
  the signal's default action, for a run stuck in a step that never ends.
"""

import os
import signal
import threading

import tensorflow as tf

SIGNALS = (signal.SIGTERM, signal.SIGINT)
PEER_STATUS = 128 + signal.SIGTERM  # a worker stopped because another one was signalled


def exit_status(signal_name):
    return 128 + int(getattr(signal, signal_name, signal.SIGTERM))


class Preempted(Exception):
    """The run stopped on a signal with its progress saved; `status`: the exit status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class StopSignal:
    """While entered (re-entrant; main thread only, elsewhere it watches nothing): SIGTERM
    and SIGINT set `flag` instead of ending the process. `received`: their names, in order."""

    def __init__(self, step=lambda: None, log=print):
        with tf.init_scope():  # one per process, whatever strategy scope is current
            self.flag = tf.Variable(False, trainable=False, name="stop_requested")
        self.received = []
        self._step, self._log = step, log
        self._depth = 0
        self._installed = None

    @property
    def requested(self):
        return bool(self.received)

    def __enter__(self):
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            read, write = os.pipe()
            os.set_blocking(write, False)  # set_wakeup_fd needs a non-blocking fd
            handlers = {s: signal.signal(s, _deferred) for s in SIGNALS}
            old_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
            watcher = threading.Thread(target=self._watch, args=(read,), daemon=True,
                                       name="sknet_stop_signal")
            watcher.start()
            self._installed = (handlers, old_fd, read, write, watcher)
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth or self._installed is None:
            return False
        handlers, old_fd, read, write, watcher = self._installed
        self._installed = None
        signal.set_wakeup_fd(old_fd)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        os.write(write, b"\0")  # the watcher's cue to end
        watcher.join(timeout=5)
        os.close(write)
        os.close(read)
        return False

    def _watch(self, read):
        while True:
            data = os.read(read, 64)
            if not data or 0 in data:
                return
            for signum in data:
                if signum in SIGNALS:  # the fd gets every signal with a Python handler
                    self._receive(signum)

    def _receive(self, signum):
        name = signal.Signals(signum).name
        self.received.append(name)
        if len(self.received) == 1:
            self.flag.assign(True)
            self._log(f"\n{name} received at step {self._step()}: stopping after the step "
                      "in progress, with a checkpoint of it")
        elif len(self.received) == 2:
            self._log(f"{name} received again: the checkpoint is completed first (a third "
                      "signal ends the process at once)")
        else:
            os._exit(128 + signum)  # (signal.signal may only be called from the main thread)


def _deferred(signum, frame):
    """The Python-level handler: nothing; the watcher thread has seen the signal."""
