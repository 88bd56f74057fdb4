"""The ResNet family: ResNeXt, SE-ResNeXt, SKNet, SK-ResNet, SE-ResNet, SENet-154."""

from sknet_keras.models.resnet.builder import backbone, pyramid_taps
from sknet_keras.models.resnet.config import ResNetConfig, SKConfig, Unit, units
from sknet_keras.models.resnet import ablations, entries

ENTRIES = entries.ENTRIES + ablations.ENTRIES

__all__ = ["backbone", "pyramid_taps", "ResNetConfig", "SKConfig", "Unit", "units", "ENTRIES"]
