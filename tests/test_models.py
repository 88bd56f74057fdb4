"""Every model family and every layer through the shared harness (tests/harness.py)."""

import pytest

from conftest import MINI_SKRESNET, MINI_SKRESNEXT
from harness import run_backbone_test, run_layer_test
from sknet_keras.layers import GroupConv2D, SelectiveKernel, SelectiveKernelAttn, SqueezeExcite
from sknet_keras.registry import MODELS

MINI = {
    "sk_resnext": MINI_SKRESNEXT,
    "sk_resnet_split_input": MINI_SKRESNET,
    "resnext": MINI_SKRESNEXT.replace(name="mini_resnext", attention=None),
    "se_resnext": MINI_SKRESNEXT.replace(name="mini_seresnext", attention="se"),
    "se_resnet_caffe_layout": MODELS["seresnet50"].replace(
        name="mini_seresnet", depths=(1, 1, 1, 1), widths=(8, 16, 32, 64),
        out_channels=(32, 64, 128, 256)),
    "senet154_layout": MODELS["senet154"].replace(
        name="mini_senet154", depths=(1, 1, 1, 1), reduce_widths=(8, 16, 32, 64),
        widths=(16, 32, 64, 128), out_channels=(32, 64, 128, 256), groups=4),
}


@pytest.mark.parametrize("name", sorted(MINI))
def test_family_through_the_harness(name):
    run_backbone_test(MINI[name])


@pytest.mark.parametrize("make,shape", [
    (lambda: GroupConv2D(16, 3, strides=2, dilation_rate=2, groups=4), (9, 9, 16)),
    (lambda: SelectiveKernel(16, branches=[(3, 1), (3, 3, 2)], groups=4, strides=2,
                             return_attention=True, min_attn_channels=8), (9, 9, 16)),
    (lambda: SelectiveKernel(16, groups=4, attention=False), (8, 8, 16)),
    (lambda: SqueezeExcite(4), (5, 5, 16)),
])
def test_layer_through_the_harness(make, shape):
    run_layer_test(make, shape)


def test_selective_kernel_attention_layer_through_the_harness():
    """Its output, the attention, is float32 under mixed precision (softmax in float32)."""
    run_layer_test(lambda: SelectiveKernelAttn(3, 8), (6, 6, 16), expected_output_shape=(3, 16),
                   mixed_output_dtype="float32")
