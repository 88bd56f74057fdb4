import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sknet_keras.registry import MODELS, ModelConfig  # noqa: E402

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
# Large reference files stay outside the repository (tests/data/README.md); CI has them beside the clone.
SHARED_REFERENCE = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")
)

# Tiny networks with the same blocks and code paths as the real ones (tests/data/README.md).
MINI_SKRESNEXT = ModelConfig(
    "mini_skresnext", block="bottleneck", depths=(2, 2, 1, 1), widths=(8, 16, 32, 64),
    out_channels=(64, 128, 256, 512), groups=8, attention="sk",
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
