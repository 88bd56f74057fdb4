"""tools/gpu_check.sh, the check the GPU machines run (JAX and PyTorch, no TensorFlow), here as
its dry run on the CPU: the wheels it carries, every part on both backends, one summary."""

import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(TOOLS, "gpu_check.sh")),
                                reason="tools/ is not beside the tests (a Bazel sandbox)")


def test_the_gpu_check_runs_the_tests_mini_networks():
    """Its copies of the tests' mini configurations (the test modules import TensorFlow,
    which the GPU machines do not have) equal the tests' own."""
    from test_kernel_paths import FAMILY_NAMES, family_config

    sys.path.insert(0, TOOLS)
    import gpu_check_keras

    configs = gpu_check_keras.family_configs()
    assert sorted(configs) == sorted(FAMILY_NAMES)
    for name in FAMILY_NAMES:
        assert configs[name] == family_config(name), name


@pytest.mark.large
def test_dry_run_on_the_cpu(tmp_path):
    """Wheels built for this Python into an empty folder, keras and the package imported from
    there, TensorFlow never imported, every part ok on JAX and PyTorch; timm, not installable
    here, skipped with its reason (the GPU machines have it)."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    start = time.monotonic()
    proc = subprocess.run(["bash", os.path.join(TOOLS, "gpu_check.sh"), "--dry-run"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    print(f"dry run: {time.monotonic() - start:.0f} s")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["status"] == "ok" and not summary["failed"], summary["failed"]
    for section in ("machine", "wheels", "families", "converters", "benchmark", "tensorflow"):
        assert section in summary, section

    wheels = summary["wheels"]
    assert wheels["install_rc"] == "0" and 0 < wheels["total_bytes"] < 64 * 2 ** 20
    assert {f.split("-")[0] for f in wheels["files"]} == {"keras", "namex", "optree", "sknet_keras"}
    site = wheels["target"]

    children = []
    for backend in ("jax", "torch"):
        families = summary["families"][backend]
        assert families["families"], backend
        for name, result in families["families"].items():
            assert result["status"] == "ok", (backend, name, result)
            assert {"float32_gpu_vs_cpu", "mixed_float16", "mixed_bfloat16"} <= set(result)
        converters = summary["converters"][backend]
        assert converters["keras_to_timm_and_back"] and converters["status"] == "ok"
        bench = summary["benchmark"][backend]
        assert bench["jobs"] and all(j["status"] == "ok" for j in bench["jobs"]), bench["jobs"]
        children += [families, converters, bench]
    modes = {row["keras"] for row in summary["benchmark"]["table"]}
    assert modes == {"jax xla", "torch eager", "torch compiled"}
    for child in children:
        assert child["backend"] in ("jax", "torch") and child["tensorflow_imported"] is False
        for package, folder in child["imported_from"].items():
            assert folder.startswith(site + os.sep), (package, folder)
    assert summary["tensorflow_imported"] and not any(summary["tensorflow_imported"].values())
    assert summary["tensorflow"]["status"] == "skipped"

    try:
        import timm  # noqa: F401
    except Exception:
        assert summary["converters"]["timm_reference"]["status"] == "skipped"
        assert "import timm failed" in summary["converters"]["timm_reference"]["reason"]
