"""Pretrained weights: the safe PyTorch reader, downloads (resume, retry, hash), the
`weights="imagenet"` routes, Keras' conventions, and fine-tuning from the trainer."""

import hashlib
import importlib.util
import http.server
import json
import os
import re
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import DATA_DIR
from pth_writer import write_pth
from sknet_keras import applications, presets
from sknet_keras.applications import build_model, se_resnet, se_resnext, sknet
from sknet_keras.convert.pth import UnsafePickleError, read_pth
from sknet_keras.convert.timm import keras_to_timm
from sknet_keras.weights import download as download_lib
from sknet_keras.applications import pretrained

PTH = os.path.join(DATA_DIR, "pth")


# --- reading .pth without PyTorch -----------------------------------------------------------

@pytest.mark.parametrize("name", ["zip.pth", "legacy.pth", "wrapped.pth.tar"])
def test_real_pytorch_files_of_both_formats(name):
    """Files written by torch.save (2.14: zip; `_use_new_zipfile_serialization=False`:
    legacy; a checkpoint dict around the state_dict), read without PyTorch."""
    expected = np.load(os.path.join(PTH, "expected.npz"))
    got = read_pth(os.path.join(PTH, name))
    assert sorted(got) == sorted(expected.files)
    for key in expected.files:
        np.testing.assert_array_equal(np.asarray(got[key], np.float32), expected[key], key)
    assert got["half"].dtype == np.float16 and str(got["bf16"].dtype) == "bfloat16"
    assert got["view"].shape == (3, 2)  # a strided, offset view of a larger storage


@pytest.mark.parametrize("legacy", [False, True])
def test_files_written_now_round_trip(legacy, tmp_path, rng):
    """With PyTorch installed, by torch.save; without, by tests/pth_writer.py."""
    tensors = {"a.weight": rng.normal(size=(4, 3, 3, 3)).astype("float32"),
               "a.bias": rng.normal(size=(4,)).astype("float32"),
               "steps": np.array([7], "int64")}
    path = str(tmp_path / "m.pth")
    try:
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, path,
                   _use_new_zipfile_serialization=not legacy)
    except ImportError:
        write_pth(path, tensors, legacy=legacy)
    got = read_pth(path)
    for key, value in tensors.items():
        np.testing.assert_array_equal(got[key], value)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_hostile_pickle_is_refused_and_runs_nothing(legacy, tmp_path):
    planted = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {planted}",)

    path = write_pth(str(tmp_path / "evil.pth"), {"w": np.zeros(2, "float32")}, legacy=legacy,
                     extra=Payload())
    with pytest.raises(UnsafePickleError, match=r"global '(posix|os|nt)\.system'.*refused, "
                                                r"nothing was executed"):
        read_pth(path)
    assert not planted.exists()


def test_state_setting_on_other_objects_is_refused(tmp_path):
    """Pickle's BUILD can set attributes on any object it reaches (classes included)."""
    import pickle

    # The OrderedDict class itself, then BUILD with state ({}, {"evil": 1}): Python's own
    # unpickler would setattr(OrderedDict, "evil", 1).
    payload = b"\x80\x02ccollections\nOrderedDict\n}}X\x04\x00\x00\x00evilK\x01s\x86b."
    path = tmp_path / "build.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(header, f, protocol=2)
        f.write(payload)
    import collections

    with pytest.raises(UnsafePickleError, match="sets the state of a type"):
        read_pth(path)
    assert not hasattr(collections.OrderedDict, "evil")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(b"\x80\x02K\x05.")  # a pickled 5
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        read_pth(path)
    zipped = write_pth(str(tmp_path / "y.pth"), {"w": np.ones(3, "float32")})
    with pytest.raises(ValueError, match="truncated|not a readable|not a PyTorch"):
        path.write_bytes(open(zipped, "rb").read()[:200])
        read_pth(path)


# --- downloads --------------------------------------------------------------------------------

class _LocalServer:
    """A threaded HTTP server on 127.0.0.1 answering with `handler` at `url` (`path`)."""

    def _serve(self, handler, path):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Server(_LocalServer):
    """A local HTTP server for `payload`; it can fail first (drop mid-file, or 503) and
    honours Range requests, recording what it was asked."""

    def __init__(self, payload, drop_after=None, fail_first=0):
        self.payload, self.drop_after, self.fail_first = payload, drop_after, fail_first
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(dict(self.headers))
                if server.fail_first:
                    server.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                start = 0
                if "Range" in self.headers:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                else:
                    self.send_response(200)
                body = server.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after is not None:
                    self.wfile.write(body[:server.drop_after])
                    server.drop_after = None
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._serve(Handler, "/weights.bin")


def test_download_resumes_after_a_dropped_connection_and_checks_the_hash(tmp_path):
    payload = os.urandom(300_000)
    sha = hashlib.sha256(payload).hexdigest()
    server = Server(payload, drop_after=100_000, fail_first=1)
    try:
        path = download_lib.download(server.url, str(tmp_path / "w.bin"), sha256=sha[:10],
                                     size=len(payload), backoff=0.01, progress=False)
    finally:
        server.close()
    assert open(path, "rb").read() == payload
    assert [r.get("Range") for r in server.requests] == [None, None, "bytes=100000-"]


def test_a_corrupted_download_is_reported_and_not_kept(tmp_path):
    payload = os.urandom(50_000)
    server = Server(payload)
    target = tmp_path / "w.bin"
    try:
        with pytest.raises(download_lib.DownloadError, match=r"its sha384 is .*publisher "
                                                             r"states 00ff.*was deleted"):
            download_lib.download(server.url, str(target), sha384="00ff" * 24, backoff=0.01,
                                  progress=False)
    finally:
        server.close()
    assert not target.exists() and not (tmp_path / "w.bin.part").exists()


class FaultyServer(_LocalServer):
    """A local HTTP server whose first answer is `fault` and the next ones correct (with
    Range and 416 as a real server): "long_length" (a Content-Length 1000 bytes longer than
    what it sends, then the connection closes), "short_length" (one 1000 bytes shorter: the
    client reads a truncated file), "wrong_range" (a resumed request answered 206 from byte
    0), "redirect_loop" (every answer a 302 to the other of two URLs), "html" (a 200
    sign-in page)."""

    def __init__(self, payload, fault):
        self.payload, self.fault, self.requests = payload, fault, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                fault, server.fault = server.fault, (server.fault if server.fault in (
                    "redirect_loop", "html") else None)
                if fault == "redirect_loop":
                    self.send_response(302)
                    self.send_header("Location", "/b" if self.path == "/a" else "/a")
                    self.end_headers()
                    return
                if fault == "html":
                    page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                if start >= len(server.payload):
                    self.send_response(416)
                    self.end_headers()
                    return
                if fault == "wrong_range":
                    start = 0
                body = server.payload[start:]
                self.send_response(206 if self.headers.get("Range") else 200)
                if self.headers.get("Range"):
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(server.payload) - 1}/"
                                     f"{len(server.payload)}")
                self.send_header("Content-Type", "application/octet-stream")
                length = len(body) + {"long_length": 1000, "short_length": -1000}.get(fault, 0)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body[:length])
                if fault == "long_length":
                    self.wfile.flush()
                    self.connection.shutdown(2)

            def log_message(self, *args):
                pass

        self._serve(Handler, "/a")


def _download(server, target, payload, **kwargs):
    return download_lib.download(server.url, str(target), sha256=hashlib.sha256(payload)
                                 .hexdigest(), size=len(payload), backoff=0.01,
                                 progress=False, **kwargs)


@pytest.mark.parametrize("fault", ["long_length", "wrong_range"])
def test_a_download_a_server_gets_wrong_ends_with_the_published_file(fault, tmp_path):
    """A Content-Length longer than what is sent: resumed from the part file (the server
    then answers 416, the part is checked and complete). A resumed request answered from
    byte 0: started over, not appended."""
    payload = os.urandom(200_000)
    server = FaultyServer(payload, fault)
    target = tmp_path / "w.bin"
    if fault == "wrong_range":
        (tmp_path / "w.bin.part").write_bytes(payload[:50_000])  # an earlier attempt's part
    try:
        assert _download(server, target, payload) == str(target)
    finally:
        server.close()
    assert target.read_bytes() == payload
    assert not (tmp_path / "w.bin.part").exists()
    if fault == "long_length":
        assert [r for _, r in server.requests] == [None, "bytes=200000-"]


@pytest.mark.parametrize("fault,message,requests", [
    ("short_length", r"^the file downloaded from \S+ is not the published one: it has "
                     r"199,000 bytes, the publisher states 200,000; it was deleted$", 1),
    ("redirect_loop", r"^\S+: HTTP 302: .*\(redirected in a loop, or to nowhere\); nothing "
                      r"was written$", None),
    ("html", r"^\S+ sent a web page \(text/html; charset=utf-8\), not the file: a sign-in, "
             r"quota or error page\? Nothing was written from it$", 1),
])
def test_a_download_that_cannot_be_the_file_fails_at_once_and_keeps_nothing(
        fault, message, requests, tmp_path):
    payload = os.urandom(200_000)
    server = FaultyServer(payload, fault)
    target = tmp_path / "w.bin"
    try:
        with pytest.raises(download_lib.DownloadError, match=message):
            _download(server, target, payload)
    finally:
        server.close()
    # No file, no part file, nothing cached; the download's lock file stays (as lock files
    # do: removing one races with the next process), released and empty.
    assert sorted(os.listdir(tmp_path)) == ["w.bin.lock"]
    assert (tmp_path / "w.bin.lock").read_text() == ""
    if requests:
        assert len(server.requests) == requests  # no retry of what cannot succeed
    else:
        assert 2 <= len(server.requests) <= 12  # urllib's redirect limit, once


def test_an_html_page_answering_a_resume_keeps_the_part_for_later(tmp_path):
    payload = os.urandom(200_000)
    part = tmp_path / "w.bin.part"
    part.write_bytes(payload[:80_000])
    server = FaultyServer(payload, "html")
    try:
        with pytest.raises(download_lib.DownloadError, match="sent a web page"):
            _download(server, tmp_path / "w.bin", payload)
    finally:
        server.close()
    assert part.read_bytes() == payload[:80_000]  # resumable, untouched
    server = FaultyServer(payload, None)
    try:
        _download(server, tmp_path / "w.bin", payload)
    finally:
        server.close()
    assert (tmp_path / "w.bin").read_bytes() == payload
    assert server.requests == [("/a", "bytes=80000-")]


def test_a_rounded_published_size_is_checked_to_its_rounding(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"x" * 1000)
    assert download_lib.verify(str(path), size=1000) is None
    assert download_lib.verify(str(path), size=1100, size_tolerance=100) is None
    assert download_lib.verify(str(path), size=900, size_tolerance=100) is None
    assert download_lib.verify(str(path), size=1101, size_tolerance=100) == (
        "it has 1,000 bytes, the publisher states 1,101 ± 100")
    assert "states 999" in download_lib.verify(str(path), size=999)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="needs torchvision, whose weights metadata states the file sizes")
def test_torchvision_sizes_are_the_ones_torchvision_states():
    # torchvision is imported in a process of its own: loaded after TensorFlow, its C
    # extension crashes the interpreter (torchvision 0.29 with TF 2.21).
    script = ("import json; from torchvision import models as m; print(json.dumps({n: "
              "(w.IMAGENET1K_V1.url, w.IMAGENET1K_V1.meta['_file_size']) for n, w in ["
              "('shufflenet_v2_x0_5', m.ShuffleNet_V2_X0_5_Weights), "
              "('shufflenet_v2_x1_0', m.ShuffleNet_V2_X1_0_Weights)]}))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    for name, (url, mib) in json.loads(out.strip().splitlines()[-1]).items():
        preset = presets.get_preset(name)
        assert preset.url == url
        assert abs(preset.size - mib * 2**20) <= preset.size_tolerance


def _timm_release(tmp_path, model_name, legacy=True):
    """A timm-layout .pth (legacy format, as timm's v0.1 releases) of a randomized model."""
    model = build_model(model_name, input_shape=(64, 64, 3), weights=None)
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign((w.numpy() + rng.normal(0, 0.02, w.shape)).astype("float32"))
    path = write_pth(str(tmp_path / "release.pth"), keras_to_timm(model, model_name),
                     legacy=legacy)
    return model, path


def test_imagenet_weights_download_convert_and_cache(tmp_path, monkeypatch, rng):
    """`SKResNet18()` (weights="imagenet" by default): downloaded from the preset's URL
    (here a local server), hash-checked, converted without PyTorch, cached; offline later."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKNET_KERAS_WEIGHTS_DIR", raising=False)
    reference, release = _timm_release(tmp_path, "skresnet18")
    payload = open(release, "rb").read()
    server = Server(payload)
    preset = presets.get_preset("skresnet18")
    monkeypatch.setitem(presets.PRESETS, presets.preset_key("skresnet18"), presets.Preset(**{
        **preset.__dict__, "url": server.url,
        "sha256": hashlib.sha256(payload).hexdigest()[:8]}))
    x = rng.uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    try:
        loaded = applications.SKResNet18(input_shape=(64, 64, 3))
    finally:
        server.close()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), reference.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    cached = pretrained.converted_path("skresnet18")
    assert os.path.isfile(cached)
    os.remove(os.path.join(pretrained.cache_dir(), preset.file_name))  # the cache serves now
    features = applications.SKResNet18(include_top=False, pooling="avg")
    assert features.output_shape == (None, 512)


def test_offline_errors_say_what_to_fetch_where(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKNET_KERAS_WEIGHTS_DIR", raising=False)
    calls = []

    def unreachable(*args):
        calls.append(args[0])
        raise OSError("network unreachable")

    monkeypatch.setattr(download_lib, "_fetch_once", unreachable)
    monkeypatch.setattr(download_lib.time, "sleep", lambda s: None)
    with pytest.raises(ValueError, match=r"(?s)could not download.*By hand: download "
                                         r"https://github.com/rwightman/.*skresnext50_ra-f40e40bf"
                                         r"\.pth and save it as .*home/models/sknet_keras/"
                                         r"skresnext50_ra-f40e40bf.pth.*SKNET_KERAS_WEIGHTS_DIR.*"
                                         r"huggingface.co/timm/skresnext50_32x4d.ra_in1k/resolve/"
                                         r"main/model.safetensors and save it, renamed, as "
                                         r"'skresnext50_32x4d.ra_in1k.safetensors'"):
        applications.SKNet50()
    assert len(calls) == 2  # offline: one retry, not five with back-off
    with pytest.raises(ValueError, match=r"(?s)could not download.*storage.openvinotoolkit"
                                         r".*SE-ResNet-152.caffemodel"):
        applications.SEResNet152()
    with pytest.raises(ValueError, match=r"(?s)no direct download.*github.com/implus/SKNet"):
        build_model("sknet50_caffe", weights="imagenet")


def test_a_local_file_that_is_not_the_published_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SKNET_KERAS_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / "SE-ResNet-50.caffemodel").write_bytes(b"not the release")
    with pytest.raises(ValueError, match=r"is not the published SE-ResNet-50.caffemodel: it "
                                         r"has 15 bytes, the publisher states 112,602,669"):
        applications.SEResNet50()


# --- Keras' conventions -------------------------------------------------------------------------

def test_weights_default_like_keras_applications():
    with_weights = {n for n, b in vars(applications).items()
                    if callable(b) and getattr(b, "default_weights", None) == "imagenet"}
    assert with_weights == {"SKNet50", "SKResNet18", "SKResNet34", "ResNeXt50", "SEResNeXt50",
                            "SEResNet50", "SEResNet101", "SEResNet152", "SENet154",
                            "SEBNInception", "ShuffleNetV2x05", "ShuffleNetV2x10", "ResNeSt50d",
                            "ResNeSt101e", "ResNeSt50d4s2x40d", "ResNeSt50d1s4x24d"}
    assert applications.SKNet26.default_weights is None
    assert applications.SKNet26(input_shape=(64, 64, 3), classes=3).output_shape == (None, 3)


@pytest.mark.parametrize("kwargs,message", [
    (dict(classifier_activation="relu"), "Only `None` and `softmax` activations are allowed"),
    (dict(weights="imagnet"), r"weights file not found: 'imagnet' \(did you mean 'imagenet'\?\)"),
    (dict(weights="imagenet", classes=10), "`classes` should be 1000"),
])
def test_keras_argument_rules(kwargs, message):
    with pytest.raises(ValueError, match=message):
        applications.SKNet50(**kwargs)


def test_family_modules_preprocess_as_their_weights_expect(rng):
    rgb = rng.uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(se_resnet.preprocess_input(rgb.copy()),
                               applications.preprocess_input(rgb.copy(), mode="senet"))
    for module in (sknet, se_resnext):
        np.testing.assert_allclose(module.preprocess_input(rgb.copy()),
                                   applications.preprocess_input(rgb.copy(), mode="torch"))
    assert se_resnet.decode_predictions is applications.decode_predictions
    assert presets.evaluation_defaults("resnext50") == (0.95, "bicubic")
    assert presets.evaluation_defaults("senet154") == (0.875, "bilinear")


# --- fine-tuning from the trainer ----------------------------------------------------------------

def _finetune_trainer(tmp_path, weights, **changes):
    from sknet_keras.trainers import datasets
    from sknet_keras.trainers.configs import recipe
    from sknet_keras.trainers.loop import Trainer
    from sknet_keras.trainers.task import ClassificationTask

    config = recipe("digits").override(name="mini_sknet", weights=weights, batch_size=16,
                                       steps_per_epoch=2, precision="float32",
                                       normalization="torch", **changes)
    task = ClassificationTask(config, datasets.load_spec("digits"))
    return Trainer(task, tf.distribute.get_strategy(), str(tmp_path / "run"),
                   log=lambda *a: None)


def _pretrained_file(tmp_path):
    from sknet_keras.weights.files import save_weights

    keras.utils.set_random_seed(5)
    source = build_model("mini_sknet", input_shape=(32, 32, 3), classes=7)
    path = str(tmp_path / "pretrained.weights.h5")
    save_weights(source, path)
    return {w.path: w.numpy() for w in source.weights}, path


@pytest.mark.large
def test_finetuning_starts_from_the_file_with_a_new_head_and_freezes_then_thaws(tmp_path):
    file_values, path = _pretrained_file(tmp_path)
    keras.utils.set_random_seed(0)
    trainer = _finetune_trainer(tmp_path, path, freeze_backbone_epochs=1, max_steps=3)
    model = trainer.model
    backbone = [w for w in model.weights if not w.path.startswith("predictions/")]
    assert backbone and all(np.array_equal(w.numpy(), file_values[w.path]) for w in backbone)
    assert model.get_layer("predictions").kernel.shape == (512, 10)  # new: 10 classes
    head = [w.numpy() for w in model.get_layer("predictions").weights]

    trainer.task.total_steps = 2  # the frozen epoch
    trainer.train()
    frozen_ok = [np.array_equal(w.numpy(), file_values[w.path]) for w in backbone]
    assert all(frozen_ok), "the backbone (BN statistics included) moved while frozen"
    assert not np.array_equal(model.get_layer("predictions").kernel.numpy(), head[0])

    trainer.task.total_steps = 3  # thawed
    trainer.train()
    moved = [w.path for w in backbone if not np.array_equal(w.numpy(), file_values[w.path])]
    assert len(moved) == len(backbone), "every backbone variable trains once thawed"


@pytest.mark.large
def test_backbone_learning_rate_multiplier(tmp_path):
    """After one SGD step from the same start on the same batch, the backbone moved
    `multiplier` times as far as with the full rate; the head the same."""
    _, path = _pretrained_file(tmp_path)
    deltas = {}
    for multiplier in (1.0, 0.25):
        keras.utils.set_random_seed(0)
        trainer = _finetune_trainer(tmp_path / str(multiplier), path, max_steps=1,
                                    backbone_lr_multiplier=multiplier, weight_decay=0.0)
        start = {w.path: w.numpy() for w in trainer.model.trainable_weights}
        trainer.train()
        deltas[multiplier] = {w.path: w.numpy() - start[w.path]
                              for w in trainer.model.trainable_weights}
    kernel = "conv3_block1_2_sk/branch1_conv/kernel"
    # (Float32 rounding of w + Δ − w: ~1e-8 absolute.)
    np.testing.assert_allclose(deltas[0.25][kernel], 0.25 * deltas[1.0][kernel], rtol=1e-3,
                               atol=5e-8)
    assert np.abs(deltas[1.0][kernel]).max() > 1e-4  # the step did move it
    np.testing.assert_allclose(deltas[0.25]["predictions/kernel"],
                               deltas[1.0]["predictions/kernel"], rtol=1e-3, atol=5e-8)


@pytest.mark.large
def test_finetuning_from_imagenet_weights_on_the_command_line(tmp_path):
    """`--weights=imagenet`: a local release file stands in for the download."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    # The Hugging Face hub's file, saved under the name the error message asks for.
    from safetensors.numpy import save_file

    source = build_model("skresnet18", input_shape=(64, 64, 3), weights=None)
    save_file(keras_to_timm(source, "skresnet18"),
              str(weights_dir / "skresnet18.ra_in1k.safetensors"))
    env.update(KERAS_HOME=str(tmp_path / "home"), SKNET_KERAS_WEIGHTS_DIR=str(weights_dir))
    model_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "sknet_keras.trainers.train", "--model=skresnet18",
         "--weights=imagenet", "--freeze_backbone_epochs=1", "--steps_per_epoch=1",
         "--max_steps=1", "--batch_size=8", f"--model_dir={model_dir}", "--export=false"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model"]["weights"] == "imagenet"
    assert config["data"]["normalization"] == "torch"


@pytest.mark.parametrize("family", ["sk_resnext", "senet154", "shufflenet_v2_sk", "se_bn_inception"])
def test_weights_h5_files_are_keras_own_and_read_by_name(family, tmp_path):
    """What a Keras user tries first: `model.load_weights("final.weights.h5")` into the same
    architecture; and `weights=PATH` by name, into include_top=False too."""
    from harness import _randomize
    from test_kernel_paths import family_config

    from sknet_keras.weights.files import FORMAT, read_weights, save_weights

    config = family_config(family)
    model = build_model(config, input_shape=(32, 32, 3), classes=5, weights=None)
    _randomize(model)
    path = str(tmp_path / "final.weights.h5")
    save_weights(model, path, config=config)
    expected = {w.path: w.numpy() for w in model.weights}

    plain = build_model(config, input_shape=(32, 32, 3), classes=5, weights=None)
    plain.load_weights(path)  # Keras' own loader
    by_name = build_model(config, input_shape=(48, 48, 3), classes=5, weights=path)
    backbone = build_model(config, include_top=False, input_shape=(32, 32, 3), weights=path)
    for loaded in (plain, by_name, backbone):
        got = {w.path: w.numpy() for w in loaded.weights}
        assert set(got) <= set(expected) and len(got) >= len(expected) - 2
        for key, value in got.items():
            np.testing.assert_array_equal(value, expected[key], err_msg=key)
    assert len(backbone.weights) == len(model.weights) - 2  # all but the classifier
    tensors, attrs = read_weights(path)
    assert set(tensors) == set(expected) and attrs.get("format") != FORMAT

    # Any other suffix: the by-name format, also loaded by `weights=`.
    other = str(tmp_path / "final.sknet.h5")
    save_weights(model, other)
    assert read_weights(other)[1]["format"] == FORMAT
    again = build_model(config, input_shape=(32, 32, 3), classes=5, weights=other)
    for w in again.weights:
        np.testing.assert_array_equal(w.numpy(), expected[w.path], err_msg=w.path)


def test_by_name_files_of_earlier_versions_under_weights_h5_keep_loading(tmp_path, rng):
    from sknet_keras.weights.files import write_tensors

    model = build_model("mini_sknet", input_shape=(32, 32, 3), classes=3, weights=None)
    values = {w.path: rng.normal(size=w.shape).astype("float32") for w in model.weights}
    path = str(tmp_path / "old.weights.h5")
    write_tensors(path, values, "mini_sknet")
    loaded = build_model("mini_sknet", input_shape=(32, 32, 3), classes=3, weights=path)
    for w in loaded.weights:
        np.testing.assert_array_equal(w.numpy(), values[w.path], err_msg=w.path)


def test_a_weights_file_with_a_non_softmax_classifier_is_refused_as_keras_does(tmp_path):
    from sknet_keras.registry import get_model_config
    from sknet_keras.weights.files import save_weights

    model = build_model("mini_sknet", input_shape=(32, 32, 3), classes=3, weights=None)
    path = str(tmp_path / "m.weights.h5")
    save_weights(model, path, config=get_model_config("mini_sknet"))
    with pytest.raises(ValueError, match="Only `None` and `softmax` activations are allowed"):
        build_model("mini_sknet", classes=3, weights=path, classifier_activation="sigmoid")
    for activation in (None, "softmax"):
        build_model("mini_sknet", input_shape=(32, 32, 3), classes=3, weights=path,
                    classifier_activation=activation)


def test_a_keras_file_whose_network_attribute_lies_is_refused_without_building_it(tmp_path):
    """A hostile attribute describing a huge network: refused from the shapes alone (nothing
    of its size is allocated), the model left as it was."""
    import h5py

    from sknet_keras.registry import get_model_config
    from sknet_keras.weights.files import NETWORK_ATTR, save_weights

    model = build_model("mini_sknet", input_shape=(32, 32, 3), classes=3, weights=None)
    path = str(tmp_path / "m.weights.h5")
    save_weights(model, path, config=get_model_config("mini_sknet"))
    with h5py.File(path, "a") as f:
        network = json.loads(f.attrs[NETWORK_ATTR])
        network["config"]["widths"] = [4096, 8192, 16384, 32768]  # ~100 GB of float32
        network["config"]["out_channels"] = [16384, 32768, 65536, 131072]
        f.attrs[NETWORK_ATTR] = json.dumps(network)
    before = [w.numpy() for w in model.weights]
    with pytest.raises(ValueError, match=r"describes a network of [\d,]+ values, the file "
                                         r"holds [\d,]+"):
        load = __import__("sknet_keras.weights.files", fromlist=["load_weights"]).load_weights
        load(model, path)
    for w, value in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), value)


def test_every_preset_is_an_architecture_and_a_tag_of_a_registry_model():
    """PRESETS keys are "architecture.tag" (timm's default_cfgs), the architecture a
    registry model; an architecture's first entry is its `weights="imagenet"`; a tag
    resolves to its own entry."""
    from sknet_keras.registry import MODELS

    assert presets.PRESETS
    for key, preset in presets.PRESETS.items():
        architecture, _, tag = key.partition(".")
        assert architecture in MODELS and re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", tag), key
        assert presets.get_preset(key) is preset
    for name in presets.models_with_weights():
        first = next(k for k in presets.PRESETS if k.partition(".")[0] == name)
        assert presets.preset_key(name) == first
    assert presets.get_preset("resnext50").crop_fraction == 0.95
    assert presets.get_preset("resnext50.no_such_tag") is None
    assert presets.get_preset("sknet101") is None


def test_a_release_is_chosen_by_its_architecture_tag(tmp_path, monkeypatch, rng):
    """`weights="skresnet18.<tag>"` loads that release (a second one, served locally), and
    "imagenet" the architecture's first; each is converted and cached apart."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SKNET_KERAS_WEIGHTS_DIR", raising=False)
    x = rng.uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    servers, references = [], {}
    for key, folder in (("skresnet18.ra_in1k", "first"), ("skresnet18.other_in1k", "second")):
        (tmp_path / folder).mkdir()
        keras.utils.set_random_seed(len(servers))
        reference, release = _timm_release(tmp_path / folder, "skresnet18")
        payload = open(release, "rb").read()
        servers.append(Server(payload))
        base = presets.PRESETS["skresnet18.ra_in1k"]
        monkeypatch.setitem(presets.PRESETS, key, presets.Preset(**{
            **base.__dict__, "url": servers[-1].url, "file_name": f"{folder}-00000000.pth",
            "sha256": hashlib.sha256(payload).hexdigest()[:8]}))
        references[key] = reference.predict(x, verbose=0)
    try:
        chosen = build_model("skresnet18", weights="skresnet18.other_in1k",
                             input_shape=(64, 64, 3))
        default = build_model("skresnet18", weights="imagenet", input_shape=(64, 64, 3))
    finally:
        for server in servers:
            server.close()
    np.testing.assert_allclose(chosen.predict(x, verbose=0), references["skresnet18.other_in1k"],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(default.predict(x, verbose=0), references["skresnet18.ra_in1k"],
                               rtol=1e-5, atol=1e-6)
    assert np.abs(references["skresnet18.ra_in1k"] - references["skresnet18.other_in1k"]).max() \
        > 1e-3  # two different releases
    with pytest.raises(ValueError, match=r"weights='skresnet18.ra_in1kk': no release of "
                                         r"skresnet18 has that tag.*did you mean "
                                         r"'skresnet18.ra_in1k'"):
        build_model("skresnet18", weights="skresnet18.ra_in1kk")
    with pytest.raises(ValueError, match=r"weights='sknet50.ra_in1k' are a release of sknet50, "
                                         r"not of skresnet18"):
        build_model("skresnet18", weights="sknet50.ra_in1k")
