"""Several processes at once (real processes): one weights cache, one run folder, every worker
of a job. Locks are `sknet_keras.file_lock` (flock: released by the kernel when a holder dies)."""

import hashlib
import http.server
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from commands import ENV

PAYLOAD = os.urandom(3 << 20)  # 3 MiB; urllib reads 1 MiB blocks (the children get SHA as an argument)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class SlowServer:
    """A local HTTP server sending `payload` in 64 KiB pieces every `delay` seconds, honouring
    Range; records (first byte asked, bytes sent) per request."""

    def __init__(self, payload, delay=0.02):
        self.payload, self.delay, self.requests = payload, delay, []
        lock, server = threading.Lock(), self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                start = 0
                if "Range" in self.headers:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                else:
                    self.send_response(200)
                body = server.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                record = {"start": start, "sent": 0}
                with lock:
                    server.requests.append(record)
                try:
                    for i in range(0, len(body), 1 << 16):
                        self.wfile.write(body[i:i + (1 << 16)])
                        record["sent"] += len(body[i:i + (1 << 16)])
                        time.sleep(server.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/w.bin"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _fetch(url, path, log, sha, size):
    """One process asking for the file (stderr to `log`): what every worker of a job does."""
    f = open(log, "w", buffering=1)  # the process's stderr until it ends
    os.dup2(f.fileno(), 2)
    sys.stderr = f
    from sknet_keras.weights.download import download

    download(url, path, sha256=sha, size=size, progress=False, backoff=0.01)


def _start(ctx, url, path, log):
    process = ctx.Process(target=_fetch, args=(url, path, log, SHA, len(PAYLOAD)))
    process.start()
    return process


@pytest.mark.large
def test_four_processes_share_one_download(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    server = SlowServer(PAYLOAD)
    path = str(tmp_path / "cache" / "w.bin")
    try:
        logs = [str(tmp_path / f"p{i}.log") for i in range(4)]
        processes = [_start(ctx, server.url, path, log) for log in logs]
        for p in processes:
            p.join(120)
        assert [p.exitcode for p in processes] == [0] * 4, [open(f).read() for f in logs]
    finally:
        server.close()
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == SHA
    assert server.requests == [{"start": 0, "sent": len(PAYLOAD)}]  # one download in all
    assert not os.path.exists(path + ".part")
    waited = [open(f).read() for f in logs]
    assert sum("w.bin: waiting for process" in text and "(downloading w.bin)" in text
               for text in waited) >= 1, waited  # they said so (those that came while it ran)


@pytest.mark.large
def test_a_killed_download_is_taken_over_from_its_part_file(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    server = SlowServer(PAYLOAD, delay=0.05)
    path = str(tmp_path / "cache" / "w.bin")
    try:
        first = _start(ctx, server.url, path, str(tmp_path / "first.log"))
        deadline = time.time() + 60
        while (not os.path.exists(path + ".part") or os.path.getsize(path + ".part") < 1 << 20) \
                and time.time() < deadline:
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.join(30)
        kept = os.path.getsize(path + ".part")
        assert kept >= 1 << 20
        logs = [str(tmp_path / f"p{i}.log") for i in range(3)]
        processes = [_start(ctx, server.url, path, log) for log in logs]
        for p in processes:
            p.join(120)
        assert [p.exitcode for p in processes] == [0] * 3, [open(f).read() for f in logs]
    finally:
        server.close()
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == SHA
    # The killed one's request, then one that resumed from the part file: nothing fetched twice.
    assert len(server.requests) == 2 and server.requests[1]["start"] == kept, server.requests
    texts = [open(f).read() for f in logs]
    assert sum(f"process {first.pid} on" in t and "stopped while downloading" in t
               for t in texts) == 1, texts


TRAIN = [sys.executable, "-m", "sknet_keras.trainers.train", "--model=mini_sknet",
         "--dataset=digits", "--image_size=32", "--batch_size=32", "--export=weights",
         "--mixed_precision=float32"]


def _lock_holder(model_dir):
    try:
        with open(os.path.join(model_dir, ".sknet_keras.lock")) as f:
            text = f.read().strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _started(model_dir, args, timeout=300):
    """A trainer into `model_dir`, returned once it holds the run's lock."""
    proc = subprocess.Popen(TRAIN + args + [f"--model_dir={model_dir}"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    while (_lock_holder(model_dir) or {}).get("pid") != proc.pid:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    return proc


def _files(folder):
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


@pytest.mark.large
def test_a_second_trainer_into_a_live_run_is_refused_and_a_killed_one_is_taken_over(tmp_path):
    model_dir = str(tmp_path / "run")
    first = _started(model_dir, ["--epochs=2"])
    second = subprocess.run(TRAIN + ["--epochs=3", "--learning_rate=0.05",
                                     f"--model_dir={model_dir}"],
                            env=ENV, capture_output=True, text=True, timeout=300)
    out = first.communicate(timeout=600)[0]
    assert first.returncode == 0, out[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    error = second.stderr.strip().splitlines()[0]
    assert f"process {first.pid} on" in error and "nothing was changed" in error, second.stderr
    assert second.stdout == "" or "precision" in second.stdout  # it trained nothing
    config = json.loads(open(os.path.join(model_dir, "config.json")).read())
    assert config["schedule"]["epochs"] == 2  # the first run's, not the refused one's
    assert "val_top1" in json.loads(open(os.path.join(model_dir, "result.json")).read())
    finished = _files(model_dir)

    # Exporting from (and by default into) a run that another process holds is refused too.
    from sknet_keras import file_lock

    with file_lock.hold(os.path.join(model_dir, ".sknet_keras.lock"), "training"):
        export = subprocess.run([sys.executable, "-m", "sknet_keras.export",
                                 f"--weights={model_dir}", "--format=saved_model"],
                                env=ENV, capture_output=True, text=True, timeout=300)
    assert export.returncode == 2, export.stderr[-3000:]
    assert f"process {os.getpid()} on" in export.stderr.strip().splitlines()[0], export.stderr
    assert _files(model_dir) == finished

    # A run killed (SIGKILL: no clean-up) leaves its lock; the same command takes it over.
    other = str(tmp_path / "killed")
    killed = _started(other, ["--epochs=2"])
    deadline = time.time() + 300
    while not [n for n in os.listdir(os.path.join(other, "checkpoints"))
               if n.endswith(".index")] if os.path.isdir(os.path.join(other, "checkpoints")) \
            else True:
        assert time.time() < deadline and killed.poll() is None
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait(60)
    assert _lock_holder(other)["pid"] == killed.pid  # left behind
    again = subprocess.run(TRAIN + ["--epochs=2", f"--model_dir={other}"], env=ENV,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(rf"took over the lock of process {killed.pid} on .* which stopped",
                     again.stdout), again.stdout[-3000:]
    assert "resumed from" in again.stdout
    assert _lock_holder(other) is None  # released on a clean exit
    assert _files(model_dir) == finished  # the first run's folder, untouched since


_WORKER = """
import runpy, sys
from sknet_keras import presets
key = presets.preset_key("skresnet18")
presets.PRESETS[key] = presets.Preset(**{{**presets.PRESETS[key].__dict__, "url": {url!r},
                                          "sha256": {sha!r}, "size": {size}}})
sys.argv = ["train"] + {args!r}
runpy.run_module("sknet_keras.trainers.train", run_name="__main__", alter_sys=True)
"""


def _fine_tune_job(model_dir, home, server, sha, size):
    """Two MultiWorkerMirrored workers fine-tuning skresnet18 from `--weights=imagenet`, whose
    release the preset finds at `server` (the only change: its URL)."""
    from test_trainer import _free_ports

    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    args = ["--model=skresnet18", "--weights=imagenet", "--dataset=digits", "--image_size=32",
            "--batch_size=16", "--steps_per_epoch=2", "--max_steps=2", "--export=weights",
            "--mixed_precision=float32", "--strategy=multi_worker_mirrored",
            f"--model_dir={model_dir}"]
    code = _WORKER.format(url=server.url, sha=sha, size=size, args=args)
    procs = []
    for task in range(2):
        env = dict(ENV, KERAS_HOME=home, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": task}}))
        env.pop("SKNET_KERAS_WEIGHTS_DIR", None)
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    return outputs


@pytest.mark.extra_large
@pytest.mark.exhaustive  # the lock itself: the 4-process download test, in CI
def test_every_worker_of_a_job_gets_the_weights_from_one_download(tmp_path):
    import numpy as np
    from pth_writer import write_pth

    from sknet_keras.applications import build_model
    from sknet_keras.convert.timm import keras_to_timm
    from sknet_keras.weights import read_weights

    # timm's release format (a .pth, as the preset's file), of randomized weights.
    source = build_model("skresnet18", weights=None)
    rng = np.random.default_rng(0)
    for w in source.weights:
        w.assign((w.numpy() + rng.normal(0, 0.02, w.shape)).astype("float32"))
    release = write_pth(str(tmp_path / "release.pth"), keras_to_timm(source, "skresnet18"),
                        legacy=True)
    payload = open(release, "rb").read()
    sha = hashlib.sha256(payload).hexdigest()
    server = SlowServer(payload, delay=0.001)
    home = str(tmp_path / "home")  # the shared cache (KERAS_HOME) of both workers
    try:
        _fine_tune_job(str(tmp_path / "job"), home, server, sha, len(payload))
        assert server.requests == [{"start": 0, "sent": len(payload)}]  # one download in all
        # The same job again, the weights now in the cache (pre-fetched): no download.
        _fine_tune_job(str(tmp_path / "prefetched"), home, server, sha, len(payload))
        assert len(server.requests) == 1
    finally:
        server.close()
    chief, other = (json.loads((tmp_path / "job" / name).read_text())
                    for name in ("result.json", "result.worker1.json"))
    assert chief["weights_checksum"] == other["weights_checksum"]  # both workers equal
    a, b = (read_weights(str(tmp_path / d / "final.weights.h5"))[0] for d in ("job", "prefetched"))
    assert sorted(a) == sorted(b) and not [k for k in a if not np.array_equal(a[k], b[k])]
