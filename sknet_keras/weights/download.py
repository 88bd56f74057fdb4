"""Resumable, retried, hash-checked downloads with a progress bar.

Written by hand because `keras.utils.get_file` restarts an interrupted download from zero
(a 270 MB caffemodel on a flaky link may never finish) and checks only full hashes, while
timm and torchvision publish the sha256 prefix in their file names. A download goes to
`<file>.part`; after a failure it continues with an HTTP Range request; the finished file is
checked against the published size and hash before it is renamed into place, and a file that
fails the check is deleted, never kept. What servers get wrong (tested against a local
server): a connection dropped mid-file or a Content-Length longer than what is sent (resumed
from the part file), a Range ignored or answered from another offset (started over), a
redirect loop or an HTML page instead of the file (refused at once, nothing written).

Several processes may ask for the same file at once (every worker of a job, pytest-xdist
workers): the first downloads under a lock on `<file>.lock` (`file_lock`), the others say that
they wait and then take the verified file; a process killed mid-file leaves its `.part`, which
the next one resumes.
"""

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request

from sknet_keras import file_lock

from sknet_keras.atomic_files import commit

CHUNK = 1 << 20


class DownloadError(ValueError):
    """A download that failed or whose content does not match what its publisher states."""


def file_hash(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def verify(path, sha256=None, sha384=None, size=None, size_tolerance=0):
    """None if `path` matches the published size / hashes (a hash may be a prefix), else
    the reason it does not. `size_tolerance`: bytes either side of `size`, for publishers
    that state a rounded size (torchvision: MiB to three decimals)."""
    if size is not None and abs(os.path.getsize(path) - size) > size_tolerance:
        stated = f"{size:,}" + (f" ± {size_tolerance:,}" if size_tolerance else "")
        return f"it has {os.path.getsize(path):,} bytes, the publisher states {stated}"
    for algorithm, expected in (("sha256", sha256), ("sha384", sha384)):
        if expected:
            actual = file_hash(path, algorithm)
            if not actual.startswith(expected.lower()):
                return f"its {algorithm} is {actual}, the publisher states {expected}"
    return None


_HTML = (b"<!doctype html", b"<html", b"<head", b"<?xml")


def _range_start(response):
    """The first byte of a 206 answer ("Content-Range: bytes 100-299/300"), or None."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0]) if value.startswith("bytes ") else None
    except (IndexError, ValueError):
        return None


def _fetch_once(url, part, timeout, progress):
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "sknet_keras"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if have and (response.status != 206 or _range_start(response) not in (None, have)):
            have = 0  # the server ignored the range, or answered another one: start over
        kind = response.headers.get("Content-Type", "")
        first = response.read(CHUNK)
        if kind.startswith("text/html") or first.lstrip()[:16].lower().startswith(_HTML):
            raise DownloadError(
                f"{url} sent a web page ({kind or 'HTML'}), not the file: a sign-in, "
                f"quota or error page? Nothing was written from it")
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        bar = None
        if progress:
            import keras

            bar = keras.utils.Progbar(total, unit_name="byte")
            bar.update(have)
        with open(part, "ab" if have else "wb") as f:
            block = first
            while block:
                f.write(block)
                have += len(block)
                if bar is not None:
                    bar.update(have)
                block = response.read(CHUNK)
    if total is not None and have < total:
        raise urllib.error.URLError(f"connection closed after {have} of {total} bytes")


def download(url, path, sha256=None, sha384=None, size=None, retries=4, timeout=60,
             progress=True, backoff=1.0, size_tolerance=0):
    """Download `url` to `path` (resuming `path.part`), check it, return `path`. One process
    at a time per `path`; one that finds `path` already there and verified takes it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    name = os.path.basename(path)

    def waiting(holder):
        print(f"{name}: waiting for {file_lock.describe(holder)}", file=sys.stderr, flush=True)

    def stale(holder):
        print(f"{name}: {file_lock.describe(holder)} stopped while downloading it; going on "
              "from what it fetched", file=sys.stderr, flush=True)

    with file_lock.hold(path + ".lock", f"downloading {name}", on_wait=waiting, on_stale=stale):
        if os.path.isfile(path) and verify(path, sha256, sha384, size, size_tolerance) is None:
            return path  # another process fetched it meanwhile
        return _download(url, path, sha256, sha384, size, retries, timeout, progress, backoff,
                         size_tolerance)


def _download(url, path, sha256, sha384, size, retries, timeout, progress, backoff,
              size_tolerance):
    part = path + ".part"
    last, done = None, False
    for attempt in range(retries + 1):
        before = _size(part)
        try:
            _fetch_once(url, part, timeout, progress)
            done = True
            break
        except urllib.error.HTTPError as e:
            if e.code == 416:  # range past the end: the partial file is complete or stale
                if verify(part, sha256, sha384, size, size_tolerance) is None:
                    done = True
                    break
                os.remove(part)
            elif 300 <= e.code < 400:  # urllib follows redirects; this is a loop or a dead end
                reason = str(e.reason).strip().splitlines()[0] if str(e.reason).strip() else ""
                raise DownloadError(f"{url}: HTTP {e.code}: {reason} (redirected in a loop, "
                                    "or to nowhere); nothing was written") from None
            elif 400 <= e.code < 500 and e.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            last = e
        except (urllib.error.URLError, OSError, TimeoutError,
                http.client.HTTPException) as e:
            last = e
            if attempt >= 1 and _size(part) == before:
                break  # no byte came, twice: offline or unreachable, retrying will not help
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    if not done:
        raise DownloadError(f"{url}: {type(last).__name__}: {getattr(last, 'reason', last)} "
                            f"(after {attempt + 1} attempt(s))")
    problem = verify(part, sha256, sha384, size, size_tolerance)
    if problem:
        os.remove(part)
        raise DownloadError(f"the file downloaded from {url} is not the published one: "
                            f"{problem}; it was deleted")
    commit(part, path)
    return path
