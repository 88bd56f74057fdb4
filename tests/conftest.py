import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import sknet_keras  # noqa: E402
from sknet_keras.registry import MODELS, ResNetConfig  # noqa: E402

if os.environ.get("SKNET_KERAS_TEST_INSTALLED"):  # CI: the tests of the installed wheel
    _source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert not os.path.abspath(sknet_keras.__file__).startswith(
            os.path.join(_source, "sknet_keras") + os.sep), (
        f"SKNET_KERAS_TEST_INSTALLED: sknet_keras was imported from the source tree "
        f"({sknet_keras.__file__}), not from the installed wheel")

# The test process is the user's: it chooses the caching CPU allocator as the commands do
# (importing the package never does), so that the tests train at the commands' speed.
sknet_keras.use_caching_allocator()

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
# Large reference files stay outside the repository (tests/data/README.md); CI has them beside the clone.
SHARED_REFERENCE = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")
)

# Tiny networks with the same blocks and code paths as the real ones (tests/data/README.md).
MINI_SKRESNEXT = ResNetConfig(
    "mini_skresnext", block="bottleneck", depths=(2, 2, 1, 1), widths=(8, 16, 32, 64),
    out_channels=(64, 128, 256, 512), groups=8, attention="sk",
)
# timm's resnext50_32x4d / seresnext50_32x4d blocks, shrunk (tools/make_timm_goldens.py).
MINI_RESNEXT = MODELS["resnext50"].replace(
    name="mini_resnext", depths=(2, 2, 1, 1), widths=(8, 16, 32, 64),
    out_channels=(64, 128, 256, 512), groups=8,
)
MINI_SERESNEXT = MODELS["seresnext50"].replace(
    name="mini_seresnext", depths=(2, 2, 1, 1), widths=(16, 16, 32, 64),
    out_channels=(128, 128, 256, 512), groups=8,
)
MINI_SKRESNET = MODELS["skresnet18"].replace(
    name="mini_skresnet", depths=(2, 2, 1, 1), widths=(16, 32, 64, 128),
    out_channels=(16, 32, 64, 128),
)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.backend.clear_session()
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- test tiers (as keras-hub and keras-cv have them) ----------------------------------------
# default: layers, every family through the harness, fast checks (minutes on 2 cores);
# large: trains, converts or starts TensorFlow subprocesses (the CPU kernel sets, backends);
# extra_large: whole-size networks and end-to-end runs of the commands.
# `--run_large` runs default + large, `--run_extra_large` every tier. CI runs every tier.

def pytest_addoption(parser):
    parser.addoption("--run_large", action="store_true", default=False,
                     help="also run the tests marked large")
    parser.addoption("--run_extra_large", action="store_true", default=False,
                     help="also run the tests marked large and extra_large")


# The longest tests (measured, `--durations`), started first: over two pytest-xdist workers a
# long test collected last leaves the other worker idle for its whole length at the end.
LONGEST_FIRST = (
    "tests/test_gpu_check.py::test_dry_run_on_the_cpu",
    "tests/test_backends.py::test_every_family_fits_alike_on_other_backends",
    "tests/test_run_state.py::test_killed_run_resumes_to_the_weights_of_an_uninterrupted_one",
    "tests/test_trainer.py::test_multi_worker_mirrored_two_processes_stop_together_on_sigterm",
    "tests/test_trainer.py::test_mirrored_strategy_over_two_cpus",
    "tests/test_benchmark.py::test_smoke_run_writes_table_and_json",
    "tests/test_trainer.py::test_corrupt_images_are_named_and_skipped_or_stop_the_run",
    "tests/test_se_bn_inception.py::test_backbone_contract_on_a_narrow_copy",
)


def _longest_first(item):
    for rank, prefix in enumerate(LONGEST_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_longest_first)  # stable: the others keep their order
    run_extra_large = config.getoption("--run_extra_large")
    run_large = config.getoption("--run_large") or run_extra_large
    skip_large = pytest.mark.skip(reason="tier large: pass --run_large to run it")
    skip_extra_large = pytest.mark.skip(reason="tier extra_large: pass --run_extra_large to run it")
    for item in items:
        if item.get_closest_marker("extra_large") and not run_extra_large:
            item.add_marker(skip_extra_large)
        elif item.get_closest_marker("large") and not run_large:
            item.add_marker(skip_large)
