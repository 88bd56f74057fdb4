"""Exclusive locks for files and folders that several processes share: the weights cache (every
worker of a job, pytest-xdist workers, two notebooks) and a training run's folder.

    with file_lock.hold(path + ".lock", "downloading w.bin", on_wait=print):
        ...  # one process at a time; the others wait (or, wait=False, get LockedError)

Written on `fcntl.flock` (`msvcrt.locking` on Windows) rather than the `filelock` package for
two reasons. The kernel releases such a lock when its holder dies (SIGKILL, out of memory, a
lost machine's NFSv4 lease), so a lock left by a killed process never blocks the next one and
nothing has to guess from ages or process ids whether a holder still lives. And the lock file
holds its holder's host, process id and purpose, which the messages name; `filelock` keeps no
such record. A holder that exits cleanly empties the file; a file that is not empty when the
lock is taken was left by a holder that died, which `on_stale` is told.

Storage without file locks (object stores such as `gs://`) is not locked: `hold` is only for
local and network file systems.
"""

import contextlib
import json
import os
import socket
import time

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

_WINDOWS_BYTE = 1 << 30  # the byte locked on Windows: far past the holder record


class LockedError(RuntimeError):
    """Another live process holds the lock (`holder`: its record, a dict)."""

    def __init__(self, path, holder):
        self.path, self.holder = path, holder
        target = os.path.basename(path).removeprefix(".").removesuffix(".lock")
        super().__init__(f"{describe(holder)} is writing {target} (lock {path}); nothing was "
                         "written: wait for it, or choose another output")


def describe(holder):
    """'process 123 on host-a (training)' from a holder record."""
    if not holder:
        return "another process"
    text = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
    return text + (f" ({holder['purpose']})" if holder.get("purpose") else "")


def _try_lock(fd):
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


def _unlock(fd):
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read_holder(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else {"purpose": text[:200]}
    except ValueError:
        return {"purpose": text[:200]}


def _write_holder(fd, holder):
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode() if holder else b"")
    os.fsync(fd)


def beside(path):
    """The lock file of an output `path` (file or folder): hidden, in the same folder."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.lock")


@contextlib.contextmanager
def writing(path, purpose):
    """Hold `beside(path)` while writing `path`; another live writer: `LockedError`, nothing
    written (the commands' outputs: two commands writing one file would mix them)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with hold(beside(path), purpose, wait=False):
        yield


_held = {}  # real path of a lock file -> how often this process holds it (re-entrant)


@contextlib.contextmanager
def hold(path, purpose="", wait=True, on_wait=None, on_stale=None, poll=0.2):
    """Hold the exclusive lock of the lock file `path` (created if missing) inside the block.

    Held by another process: with `wait`, call `on_wait(holder)` once and wait for it;
    without, raise `LockedError`. `on_stale(holder)`: the lock was left by a holder that died
    (its record is still there). Re-entrant within a process.
    """
    key = os.path.realpath(path)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _try_lock(fd):
            holder = _read_holder(fd)
            if not wait:
                raise LockedError(path, holder)
            if on_wait is not None:
                on_wait(holder)
            while not _try_lock(fd):  # polled: flock has no timeout, and a wait is interruptible
                time.sleep(poll)
        left = _read_holder(fd)
        if left is not None and on_stale is not None:
            on_stale(left)
        _write_holder(fd, {"host": socket.gethostname(), "pid": os.getpid(),
                           "purpose": purpose, "since": round(time.time(), 3)})
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            _write_holder(fd, None)  # a clean exit: nothing stale for the next holder
            _unlock(fd)
    finally:
        os.close(fd)
