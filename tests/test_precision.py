"""Precision defaults that fit the hardware, and a clear refusal where bfloat16 cannot train."""

import os
import subprocess
import sys

import pytest

from sknet_keras.layers.accel import kernel_support
from sknet_keras.trainers import precision
from commands import ENV


def _cpuinfo_flags():
    """Read independently of kernel_support: the first 'flags' line of /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].split() for line in f
                         if line.startswith("flags")), [])
    except OSError:
        return []


def _machine(monkeypatch, gpu=False, onednn=True, bf16=False):
    monkeypatch.setattr(kernel_support, "gpu_available", lambda: gpu)
    monkeypatch.setattr(kernel_support, "onednn_enabled", lambda: onednn)
    monkeypatch.setattr(kernel_support, "cpu_native_bfloat16", lambda: bf16)


@pytest.mark.parametrize("machine,strategy,want", [
    (dict(gpu=True), "mirrored", "float16"),
    (dict(), "tpu", "bfloat16"),
    (dict(onednn=True, bf16=True), "default", "bfloat16"),
    (dict(onednn=False, bf16=True), "default", "float32"),   # Eigen: no bf16 kernels
    (dict(onednn=True, bf16=False), "default", "float32"),   # oneDNN on AVX2
    (dict(onednn=False, bf16=False), "default", "float32"),
])
def test_default_precision_fits_the_hardware(machine, strategy, want, monkeypatch):
    _machine(monkeypatch, **machine)
    chosen, why = precision.choose(None, strategy)
    assert chosen == want and why.startswith("default")


@pytest.mark.parametrize("machine", [dict(onednn=True, bf16=False), dict(onednn=False,
                                                                          bf16=True)])
def test_bfloat16_without_native_support_is_refused_in_one_line(machine, monkeypatch):
    _machine(monkeypatch, **machine)
    with pytest.raises(ValueError, match="^bfloat16: ") as e:
        precision.choose("bfloat16", "default")
    assert "\n" not in str(e.value) and "float32" in str(e.value)
    _machine(monkeypatch, gpu=True)
    assert precision.choose("bfloat16", "mirrored")[0] == "bfloat16"  # a GPU has bf16


def _native_bf16():
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() in ("AVX2", "AVX512_CORE",
                                                                     "SSE41", "AVX")
    return bool({"avx512_bf16", "amx_bf16"} & set(_cpuinfo_flags())) and not capped


def test_this_machines_flags_are_read():
    flags = set(_cpuinfo_flags())
    assert kernel_support.cpu_native_bfloat16() == _native_bf16()
    assert kernel_support.cpu_has_avx512() == ("avx512f" in flags)


@pytest.mark.large
def test_the_trainer_says_its_precision_first_and_refuses_bf16_it_cannot_train(tmp_path):
    """Through the command: the first line names the precision and why; bfloat16 on a CPU
    without native bf16 is one line and status 2, with nothing written."""
    args = [sys.executable, "-m", "sknet_keras.trainers.train", "--model=mini_sknet",
            "--max_steps=1", "--steps_per_epoch=1", "--epochs=1", "--export=false",
            "--batch_size=8"]
    run = subprocess.run(args + [f"--model_dir={tmp_path / 'a'}"], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    first = run.stdout.splitlines()[0]
    # TensorFlow turns oneDNN on by default on CPUs with native bf16 (and the commands leave
    # that choice to it), unless TF_ENABLE_ONEDNN_OPTS says otherwise.
    native = _native_bf16() and os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
    assert first.startswith(f"precision: {'bfloat16' if native else 'float32'} (default")
    if native:
        pytest.skip("this CPU computes bfloat16 natively: nothing to refuse")
    # Why: the CPU lacks bf16, or (a bf16 CPU, emulating another) oneDNN is switched off.
    why = ("TensorFlow's oneDNN kernels are off" if _native_bf16()
           else "this CPU has no native bfloat16")
    assert first.startswith(f"precision: float32 (default: {why}"), first
    refused = subprocess.run(args + ["--mixed_precision=bfloat16",
                                     f"--model_dir={tmp_path / 'b'}"], env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[0].startswith(
        f"sknet_keras.trainers.train: error: --mixed_precision: bfloat16: {why}")
    assert "Traceback" not in refused.stderr and not (tmp_path / "b").exists()
