"""Writing a file, or a folder, so that it is complete or absent.

Every file the package writes (weights, a run's records and exports, converted weights,
downloads, presets, reports) goes through here: it is written under a temporary name in its
own folder (`.tmp.<pid>.<name>`, keeping the name's suffixes, which Keras and h5py check),
flushed to the disk (every file of a folder too), then renamed over the target, and the
folder's entry is flushed. A rename within one filesystem is atomic, so a process killed at
any point leaves the old file or the new one, never part of one; a failure removes the
temporary. `is_partial` names what a killed writer left behind, for whoever cleans a folder.

A folder cannot be renamed over another. On Linux the two are swapped in one step
(`renameat2(RENAME_EXCHANGE)`, through ctypes: Python has no call for it); elsewhere, or on a
filesystem that cannot swap, the old folder is first renamed aside, and a kill between the
two renames leaves it there for `restore_interrupted` to put back.
"""

import contextlib
import ctypes
import os
import shutil
import sys

TMP_PREFIX = ".tmp."
_ASIDE = TMP_PREFIX + "old."


def remove(path):
    """Remove a file, link or folder; nothing if absent."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def is_partial(name):
    """Whether a file name is a temporary of this module (left by a killed writer)."""
    return name.startswith(TMP_PREFIX)


def _fsync(path):
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a folder
        pass
    finally:
        os.close(fd)


def _fsync_tree(path):
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for name in names:
                _fsync(os.path.join(root, name))
            _fsync(root)
    else:
        _fsync(path)


def _exchange(a, b):
    """Swap two paths in one step (Linux `renameat2` with RENAME_EXCHANGE); False where the
    system or the filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (glibc < 2.28, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _aside(path):
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f"{_ASIDE}{os.getpid()}.{name}")


def _rename(tmp, path):
    """`tmp` to `path`, replacing what is there (a folder too) in one step where possible."""
    if not (os.path.isdir(path) and not os.path.islink(path)):
        os.replace(tmp, path)
    elif _exchange(tmp, path):
        remove(tmp)  # now the old folder
    else:
        aside = _aside(path)
        os.replace(path, aside)
        os.replace(tmp, path)
        remove(aside)


def restore_interrupted(folder):
    """Put back the folders that a writer killed between its two renames (no swap in one
    step here) had moved aside and not yet replaced. Returns their names."""
    restored = []
    for name in sorted(os.listdir(folder)):
        if name.startswith(_ASIDE):
            target = os.path.join(folder, name[len(_ASIDE):].split(".", 1)[1])
            if not os.path.lexists(target):
                os.replace(os.path.join(folder, name), target)
                restored.append(os.path.basename(target))
    return restored


def commit(tmp, path):
    """Flush `tmp` (a file or folder) to the disk and rename it over `path`."""
    _fsync_tree(tmp)
    _rename(tmp, path)
    _fsync(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; write the file or folder there. When the block
    ends it is committed over `path`; when it raises, the temporary is removed and `path` is
    as it was."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}.{name}")
    remove(tmp)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        remove(tmp)


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """`open(path, mode)` that replaces `path` whole when the block ends."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
