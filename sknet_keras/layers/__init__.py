"""Keras layers of sknet_keras: SK convolution, split attention (ResNeSt), SE block, the
grouped conv they share, and the few layers other families need (channel shuffle,
Caffe-semantics pooling).

Importing them changes nothing in the process (no environment variable, no TensorFlow
setting). How they run fastest on each backend and CPU is `sknet_keras.layers.accel`.
"""

from sknet_keras.layers.batch_norm import BatchNorm
from sknet_keras.layers.caffe_pooling import CaffePooling2D
from sknet_keras.layers.channel_shuffle import ChannelShuffle, ChannelSplit
from sknet_keras.layers.group_conv import GroupConv2D
from sknet_keras.layers.pointwise_conv import PointwiseConv2D
from sknet_keras.layers.selective_kernel import SelectiveKernel, SelectiveKernelAttn
from sknet_keras.layers.split_attention import SplitAttention
from sknet_keras.layers.squeeze_excite import SqueezeExcite

__all__ = ["BatchNorm", "CaffePooling2D", "ChannelShuffle", "ChannelSplit", "GroupConv2D",
           "PointwiseConv2D", "SelectiveKernel", "SelectiveKernelAttn", "SplitAttention",
           "SqueezeExcite"]
