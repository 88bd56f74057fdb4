"""`python -m sknet_keras.benchmark` runs end to end (a smoke run on tiny inputs; the
speed and memory numbers themselves are the benchmark's job, not a test's)."""

import json
import subprocess
import sys

import pytest

from commands import ENV

pytestmark = pytest.mark.large

# The command as users run it (tests/commands.py: TF_CPP_MIN_LOG_LEVEL unset; TensorFlow
# 2.21 prints its CUDA-stub notice whatever the level says).
CMD = [sys.executable, "-m", "sknet_keras.benchmark"]


@pytest.mark.parametrize("args,message", [
    (["--batch_size=0"], "flag --batch_size=0: 0 is not a positive integer"),
    (["--image_size=8"], "flag --image_size=8"),
    (["--modle=sknet50"], "Unknown command line flag 'modle'"),
])
def test_bad_flags_fail_in_one_line(args, message, tmp_path):
    proc = subprocess.run(CMD + args + [f"--output={tmp_path / 'b.json'}"], env=ENV,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2, proc.stderr
    assert lines[0].startswith("sknet_keras.benchmark: error: ") and message in lines[0]
    assert not (tmp_path / "b.json").exists()


@pytest.mark.exhaustive  # the command's start and its flags: the tests above, in CI
def test_smoke_run_writes_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        CMD + ["--models=mini_sknet", "--image_size=32", "--batch_size=2",
               "--warmup=1", "--repeats=2", "--iters=1", "--memory_batch_size=2",
               "--memory_measure=allocator", f"--output={out}"],
        env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    names = ["keras_resnet50", "mini_sknet"]
    assert list(payload["results"]) == names
    for name in names:
        for mode in ("predict", "function", "train"):
            samples = payload["results"][name][mode]["samples"]
            assert len(samples) == 2 and all(s > 0 for s in samples)
        assert payload["train_peak_mib"][name] > 0
    assert payload["memory_measure"] == "allocator"
    # At the SGD update, weights, gradients and momentum of ResNet50 (25.6 M trainable) are all live.
    assert payload["train_peak_mib"]["keras_resnet50"] > 3 * 25_583_592 * 4 / 2**20
    gmacs = {n: payload["results"][n]["gmacs"] for n in names}
    assert gmacs["mini_sknet"] > 0
    assert gmacs["keras_resnet50"] > 10 * gmacs["mini_sknet"]
    table = proc.stdout
    assert "ratio" in table and "eff" in table and all(n in table for n in names)
    yardstick = next(line for line in table.splitlines() if line.startswith("keras_resnet50"))
    # Columns: name, GMAC, then per mode img/s, ratio, eff: all 1.00 for the yardstick.
    assert yardstick.split()[3:5] == ["1.00", "1.00"]
    mini = next(line for line in table.splitlines() if line.startswith("mini_sknet "))
    _, gmac, ips, ratio, eff = mini.split()[:5]
    assert float(eff) == pytest.approx(float(ratio) * gmacs["mini_sknet"] / gmacs["keras_resnet50"],
                                       abs=0.006)


def test_rss_memory_probe_reports_the_training_high_water_mark():
    proc = subprocess.run(
        CMD + ["--memory_probe=mini_sknet", "--memory_measure=rss", "--image_size=32",
               "--memory_batch_size=2"],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"] > 0


REMAT_CHECK = """
import json
from sknet_keras import benchmark
from sknet_keras.layers import SelectiveKernel
out = {}
for name in ("mini_sknet", "mini_sknet:remat"):
    model = benchmark.build(name, 32, "float32")
    out[name] = {"remat": [l.rematerialize for l in model._flatten_layers()
                           if isinstance(l, SelectiveKernel)],
                 "params": model.count_params()}
print(json.dumps(out))
"""


def test_remat_variant_switches_every_sk_layer():
    # A subprocess: the benchmark module defines absl flags, as does the package's CLI.
    proc = subprocess.run([sys.executable, "-c", REMAT_CHECK], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    plain, remat = out["mini_sknet"], out["mini_sknet:remat"]
    assert remat["remat"] and all(remat["remat"])
    assert len(plain["remat"]) == len(remat["remat"]) and not any(plain["remat"])
    assert plain["params"] == remat["params"]  # the same network, computed otherwise


@pytest.mark.parametrize("models,message", [
    ("mini_sknet:fast", "unknown variant 'fast'"),
    ("sknet51", "sknet51"),
])
def test_bad_model_names_fail_naming_them(models, message):
    proc = subprocess.run(CMD + [f"--models={models}", "--memory_batch_size=0"], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
