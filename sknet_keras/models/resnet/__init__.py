"""The ResNet family: ResNeXt, SE-ResNeXt, SKNet, SK-ResNet, SE-ResNet, SENet-154."""

from sknet_keras.models.resnet.builder import backbone, pyramid_taps
from sknet_keras.models.resnet.config import ResNetConfig, SKConfig, Unit, units
from sknet_keras.models.resnet import ablations, entries

from sknet_keras.models.entry import Family

ENTRIES = entries.ENTRIES + ablations.ENTRIES
FAMILY = Family("resnet", ResNetConfig, backbone, pyramid_taps, ENTRIES, converters={
    "timm": "sknet_keras.convert.timm:resnet_timm_mapping",
    "caffe": "sknet_keras.convert.caffe:resnet_caffe_mapping"},
    timm_architectures=entries.TIMM_ARCHITECTURES, hub_name="SKNet")

__all__ = ["backbone", "pyramid_taps", "ResNetConfig", "SKConfig", "Unit", "units", "ENTRIES", "FAMILY"]
