"""The SK convolution of Li et al. (CVPR 2019): split, fuse, select.

Split: M branches over the same input, branch m = GroupConv2D(k_m, dilation d_m, groups g_m,
the unit's stride) → BN → ReLU. Fuse and select (`SelectiveKernelAttn`): U = Σ U_m → global
average pool → z = ReLU(BN(W s)), W without bias, d = max(C / r, L) → one bias-free
d → M·C projection laid out branch-major (channels [0:C] belong to branch 0) → softmax over
the M branches, in float32 under mixed precision. Output V = Σ a_m ⊙ U_m.
docs/architecture.md has the details and the mistakes public ports make.

With `return_attention=True` the layer returns `[V, a]`, a of shape (N, M, C) in float32: the
applications build their SK units that way, so the paper's attention analysis reads
`model.get_layer("conv3_block4_2_sk").output[1]` without rebuilding anything.

Sub-layers are attributes (`branch0_conv`, `branch0_bn`, …, `attn`), never Python lists:
TensorFlow's checkpointing does not see layers held in lists, and a checkpoint would
silently lack their weights.

The computation is the four functions below, in Keras operations, on every backend. On
TensorFlow the layer may run it faster without changing it (`accel.sk_paths`: XLA-fused
inference, rematerialized training); the table in `sknet_keras.layers.accel` says where.
"""

import keras
from keras import ops

from sknet_keras.layers import options
from sknet_keras.layers.accel import sk_paths
from sknet_keras.layers.batch_norm import BatchNorm
from sknet_keras.layers.channels import attn_channels as default_attn_channels
from sknet_keras.layers.group_conv import GroupConv2D
from sknet_keras.layers.initializers import BN_EPSILON, BN_MOMENTUM, conv_kernel_initializer
from sknet_keras.layers.nesting import nested_layers

_register = keras.saving.register_keras_serializable(package="sknet_keras")


# --- the computation: written once; every way the layer runs calls `split_fuse_select` --------
def branch_sum(feats):
    """U = Σ_m U_m."""
    u = feats[0]
    for f in feats[1:]:
        u = u + f
    return u


def select(feats, attention):
    """V = Σ_m a_m ⊙ U_m, attention (N, M, C) cast to the features' dtype."""
    weights = ops.cast(attention, feats[0].dtype)
    v = feats[0] * weights[:, None, None, 0, :]
    for m in range(1, len(feats)):
        v = v + feats[m] * weights[:, None, None, m, :]
    return v


def branch_attention(u, fuse_kernel, normalize_fuse, select_kernel, num_branches):
    """Fuse and select: U (N, H, W, C) → a (N, M, C) in float32, a softmax over the M axis.

    s = mean over H, W; z = ReLU(BN(s W_fuse)); logits = z W_select, laid out branch-major.
    The projections are bias-free matrix products in the features' dtype.
    """
    s = ops.mean(u, axis=(1, 2))
    z = ops.relu(normalize_fuse(ops.matmul(s, ops.cast(fuse_kernel, s.dtype))))
    logits = ops.matmul(z, ops.cast(select_kernel, z.dtype))
    logits = ops.reshape(logits, (-1, num_branches, u.shape[-1]))
    return ops.softmax(ops.cast(logits, "float32"), axis=1)


def split_fuse_select(convs, normalize, activation, fuse_kernel=None, select_kernel=None):
    """(V, a) from the M branch convolutions.

    `normalize(i, x)` is BN number i: the branches' BNs are 0..M-1, the fuse BN is M.
    `activation` is "relu" or None (after each branch's BN). Without kernels (the paper's
    no-attention ablation) the result is (U, None).
    """
    feats = [normalize(i, c) for i, c in enumerate(convs)]
    if activation == "relu":
        feats = [ops.relu(f) for f in feats]
    u = branch_sum(feats)
    if fuse_kernel is None:
        return u, None
    m = len(convs)
    a = branch_attention(u, fuse_kernel, lambda h: normalize(m, h), select_kernel, m)
    return select(feats, a), a


# --- the layers ---------------------------------------------------------------------------


def normalize_branches(branches, groups):
    """`M` or a list of (kernel, dilation[, groups]) → tuple of (kernel, dilation, groups)."""
    if isinstance(branches, int):
        if branches < 1:
            raise ValueError(f"branches must be >= 1; got {branches}")
        return tuple((3, m + 1, groups) for m in range(branches))
    out = []
    for spec in branches:
        spec = tuple(spec)
        if len(spec) == 2:
            spec = spec + (None,)
        if len(spec) != 3:
            raise ValueError(
                f"each branch is (kernel_size, dilation[, groups]); got {spec!r}"
            )
        k, d, g = spec
        g = groups if g is None else g
        if int(k) < 1 or int(d) < 1 or int(g) < 1 or int(k) % 2 == 0:
            raise ValueError(
                f"branch {spec!r}: kernel_size must be odd and >= 1, dilation and groups >= 1"
            )
        out.append((int(k), int(d), int(g)))
    if not out:
        raise ValueError("branches must name at least one branch")
    return tuple(out)


_ATTN_RULE = ("reduction", "min_attn_channels", "attn_divisor")


def _attn_channels(filters, attn_channels, reduction, min_attn_channels, attn_divisor):
    """d: given, or max(C / reduction, min_attn_channels) rounded by attn_divisor."""
    rule = dict(zip(_ATTN_RULE, (reduction, min_attn_channels, attn_divisor)))
    given = {k: v for k, v in rule.items() if v is not None}
    if attn_channels is not None:
        if given:
            name, value = next(iter(given.items()))
            raise ValueError(f"give attn_channels or {', '.join(_ATTN_RULE)}, not both; got "
                             f"attn_channels={attn_channels} and {name}={value}")
        return int(attn_channels)
    if reduction is not None and int(reduction) < 1:
        raise ValueError(f"reduction must be positive; got {reduction}")
    # The rule's own defaults (channels.attn_channels) fill what is not given.
    names = ("reduction", "min_channels", "divisor")
    return int(default_attn_channels(filters, **{n: int(v) for n, v in zip(names, rule.values())
                                                 if v is not None}))


def _bn(layer, name):
    return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=layer.dtype_policy,
                     name=name)


@_register
class SelectiveKernelAttn(keras.layers.Layer):
    """Fuse and select: the sum of the branches U (N, H, W, C) → attention (N, M, C).

    Global average pool → bias-free projection to `attn_channels` → BN → ReLU → bias-free
    projection to M·C (branch-major) → softmax over the M axis, computed in float32.
    """

    def __init__(self, num_branches, attn_channels, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_branches = int(num_branches)
        self.attn_channels = int(attn_channels)
        if self.num_branches < 1 or self.attn_channels < 1:
            raise ValueError(f"num_branches and attn_channels must be positive; got "
                             f"{num_branches}, {attn_channels}")
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        dense = dict(use_bias=False, kernel_regularizer=self.kernel_regularizer,
                     dtype=self.dtype_policy)
        self.fuse_conv = keras.layers.Dense(self.attn_channels, name="fuse_conv", **dense)
        self.fuse_bn = _bn(self, "fuse_bn")
        self._dense = dense
        self.select_conv = None  # its width M·C is known at build time

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel dimension of the input must be known")
        self.channels = int(channels)
        self.select_conv = keras.layers.Dense(self.num_branches * self.channels,
                                              name="select_conv", **self._dense)
        self.fuse_conv.build((None, self.channels))
        self.fuse_bn.build((None, self.attn_channels))
        self.select_conv.build((None, self.attn_channels))

    def call(self, u, training=None):
        return branch_attention(u, self.fuse_conv.kernel,
                                 lambda h: self.fuse_bn(h, training=training),
                                 self.select_conv.kernel, self.num_branches)

    def compute_output_spec(self, u, training=None):
        return keras.KerasTensor((u.shape[0], self.num_branches, u.shape[-1]), dtype="float32")

    def count_macs(self, input_shape):
        c = input_shape[-1]
        return c * self.attn_channels + self.attn_channels * self.num_branches * c

    def get_config(self):
        config = super().get_config()
        config.update(num_branches=self.num_branches, attn_channels=self.attn_channels,
                      kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer))
        return config


@_register
class SelectiveKernel(keras.layers.Layer):
    """SK convolution: split / fuse / select.

    Args:
        filters: output channels C.
        branches: M (branch m is a 3×3 with dilation m+1) or a list of
            (kernel_size, dilation[, groups]) per branch, e.g. [(3, 1), (5, 1, 64)].
        groups: cardinality G of branches that do not name their own.
        reduction, min_attn_channels, attn_divisor: d = max(C / r, L) (divisor > 1 rounds
            C / r like timm's make_divisible); defaults 16, 32, 1.
        attn_channels: d itself, instead of the three above (`get_config` stores only d).
        strides: the unit's stride, applied on every branch.
        attention: False gives the plain sum of the branches (the paper's ablation).
        split_input: each branch sees its own C_in / M slice of the input (timm SK-ResNet).
        branch_activation: "relu" after each branch's BN (the paper), or None (its
            ShuffleNetV2 + SK variant).
        return_attention: return [V, attention (N, M, C) float32] instead of V.
        implementation: "auto" (faster paths on TensorFlow, see `sk_paths`) or "reference".
        rematerialize: in training, keep only the input and recompute the unit in the
            backward (TensorFlow, unsynchronized BN): less memory, slower steps
            (docs/performance.md). Default: the enclosing `build_options(rematerialize=...)`.
    """

    def __init__(
        self,
        filters,
        branches=2,
        groups=32,
        reduction=None,
        min_attn_channels=None,
        attn_divisor=None,
        attn_channels=None,
        strides=1,
        attention=True,
        split_input=False,
        branch_activation="relu",
        return_attention=False,
        implementation="auto",
        rematerialize=None,
        kernel_initializer=None,
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if implementation not in sk_paths.IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {sk_paths.IMPLEMENTATIONS}; "
                             f"got {implementation!r}")
        self.implementation = implementation
        self.rematerialize = bool(options.current().rematerialize if rematerialize is None
                                  else rematerialize)
        self.filters = int(filters)
        self.groups = int(groups)
        self.branches = normalize_branches(branches, self.groups)
        self.strides = int(strides)
        self.attention = bool(attention)
        self.split_input = bool(split_input)
        if branch_activation not in ("relu", None):
            raise ValueError(f"branch_activation must be 'relu' or None; got {branch_activation!r}")
        self.branch_activation = branch_activation
        self.return_attention = bool(return_attention)
        if self.filters < 1 or self.strides < 1:
            raise ValueError(f"filters and strides must be positive; got {filters}, {strides}")
        if self.return_attention and not self.attention:
            raise ValueError("return_attention=True needs attention=True (no attention to return)")
        for k, d, g in self.branches:
            if self.filters % g:
                raise ValueError(
                    f"filters ({self.filters}) must be divisible by the branch groups ({g})"
                )
        self.attn_channels = _attn_channels(self.filters, attn_channels, reduction,
                                            min_attn_channels, attn_divisor)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or conv_kernel_initializer()
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        for m, (k, d, g) in enumerate(self.branches):
            setattr(self, f"branch{m}_conv", GroupConv2D(
                self.filters, k, strides=self.strides, dilation_rate=d, groups=g,
                kernel_initializer=self.kernel_initializer,
                kernel_regularizer=self.kernel_regularizer,
                dtype=self.dtype_policy, name=f"branch{m}_conv"))
            setattr(self, f"branch{m}_bn", _bn(self, f"branch{m}_bn"))
        self.attn = (SelectiveKernelAttn(self.num_branches, self.attn_channels,
                                         kernel_regularizer=self.kernel_regularizer,
                                         dtype=self.dtype_policy, name="attn")
                     if self.attention else None)

    @property
    def num_branches(self):
        return len(self.branches)

    @property
    def branch_convs(self):
        return [getattr(self, f"branch{m}_conv") for m in range(self.num_branches)]

    @property
    def branch_bns(self):
        return [getattr(self, f"branch{m}_bn") for m in range(self.num_branches)]

    def _branch_input_shape(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel dimension of the input must be known")
        if self.split_input:
            if channels % self.num_branches:
                raise ValueError(
                    f"{self.name}: split_input needs input channels ({channels}) divisible "
                    f"by the number of branches ({self.num_branches})"
                )
            channels //= self.num_branches
        return tuple(input_shape[:-1]) + (channels,)

    def build(self, input_shape):
        branch_shape = self._branch_input_shape(input_shape)
        for conv, bn in zip(self.branch_convs, self.branch_bns):
            conv.build(branch_shape)
            bn.build(conv.compute_output_shape(branch_shape))
        if self.attention:
            self.attn.build(self.branch_convs[0].compute_output_shape(branch_shape))

    @property
    def batch_norms(self):
        """BN number i of `split_fuse_select`: the branches', then the fuse BN."""
        return self.branch_bns + ([self.attn.fuse_bn] if self.attention else [])

    def branch_convolutions(self, inputs):
        """The M branch convolutions (split), before their BNs."""
        xs = (ops.split(inputs, self.num_branches, axis=-1) if self.split_input
              else [inputs] * self.num_branches)
        return [conv(x) for x, conv in zip(xs, self.branch_convs)]

    def split_fuse_select(self, inputs, normalize):
        """(V, attention or None) with BN i computed as `normalize(i, x)`."""
        attn = self.attn
        return split_fuse_select(
            self.branch_convolutions(inputs), normalize, self.branch_activation,
            attn.fuse_conv.kernel if attn else None, attn.select_conv.kernel if attn else None)

    def call(self, inputs, training=None):
        path = sk_paths.choose(self, training)
        if path == "fused":
            v, attn = sk_paths.fused_inference(self, inputs, split_fuse_select)
        elif path == "remat":
            v, attn = sk_paths.rematerialized_training(self, inputs)
        else:
            norms = self.batch_norms
            v, attn = self.split_fuse_select(
                inputs, lambda i, x: norms[i](x, training=training))
        return [v, attn] if self.return_attention else v

    def compute_output_shape(self, input_shape):
        out = self.branch_convs[0].compute_output_shape(self._branch_input_shape(input_shape))
        if self.return_attention:
            return [out, (input_shape[0], self.num_branches, self.filters)]
        return out

    def compute_output_spec(self, inputs, training=None):
        shapes = self.compute_output_shape(inputs.shape)
        if self.return_attention:
            return [
                keras.KerasTensor(shapes[0], dtype=self.compute_dtype),
                keras.KerasTensor(shapes[1], dtype="float32"),
            ]
        return keras.KerasTensor(shapes, dtype=self.compute_dtype)

    def count_macs(self, input_shape):
        branch_shape = self._branch_input_shape(input_shape)
        macs = sum(conv.count_macs(branch_shape) for conv in self.branch_convs)
        if self.attention:
            macs += self.attn.count_macs((None, self.filters))
        return macs

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            branches=[list(b) for b in self.branches],
            groups=self.groups,
            attn_channels=self.attn_channels,
            strides=self.strides,
            attention=self.attention,
            split_input=self.split_input,
            branch_activation=self.branch_activation,
            return_attention=self.return_attention,
            implementation=self.implementation,
            rematerialize=self.rematerialize,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config

    @classmethod
    def from_config(cls, config):
        if config.get("attn_channels") is not None:  # older configs also stored how d was made
            config = {k: v for k, v in config.items() if k not in _ATTN_RULE}
        return super().from_config(config)


def set_rematerialize(model, enabled=True):
    """Switch `rematerialize` on every SK layer of a built model; returns how many."""
    layers = [l for l in nested_layers(model) if isinstance(l, SelectiveKernel)]
    for layer in layers:
        layer.rematerialize = bool(enabled)
    return len(layers)
