"""Keras layers of sknet_keras: SK convolution, SE block, and the grouped conv they share."""

from sknet_keras.layers.batch_norm import BatchNorm
from sknet_keras.layers.group_conv import GroupConv2D
from sknet_keras.layers.selective_kernel import SelectiveKernel, SelectiveKernelAttn
from sknet_keras.layers.squeeze_excite import SqueezeExcite

__all__ = ["BatchNorm", "GroupConv2D", "SelectiveKernel", "SelectiveKernelAttn", "SqueezeExcite"]
