"""Keras layers of sknet_keras: SK convolution, SE block, the grouped conv they share, and
the few layers other families need (channel shuffle, Caffe-semantics pooling).

Importing them chooses TensorFlow's caching CPU allocator where its Eigen kernels are in use
and nothing has run yet (`cpu_allocator`).
"""

from sknet_keras.layers import cpu_allocator

from sknet_keras.layers.batch_norm import BatchNorm
from sknet_keras.layers.caffe_pooling import CaffePooling2D
from sknet_keras.layers.channel_shuffle import ChannelShuffle, ChannelSplit
from sknet_keras.layers.group_conv import GroupConv2D
from sknet_keras.layers.pointwise_conv import PointwiseConv2D
from sknet_keras.layers.selective_kernel import SelectiveKernel, SelectiveKernelAttn
from sknet_keras.layers.squeeze_excite import SqueezeExcite

cpu_allocator.use_caching_allocator()

__all__ = ["BatchNorm", "CaffePooling2D", "ChannelShuffle", "ChannelSplit", "GroupConv2D",
           "PointwiseConv2D", "SelectiveKernel", "SelectiveKernelAttn", "SqueezeExcite"]
