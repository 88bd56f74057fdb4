"""One generic builder for every registry model (ResNeXt / SE-ResNeXt / SKNet / SK-ResNet).

Layer names are stable and follow `keras.applications.resnet`: `conv1_conv`, `pool1_pool`,
then `conv{stage}_block{unit}_{i}_{op}` with stage 2..5 as in the papers, e.g.
`conv3_block4_2_sk` is the paper's SK_3_4. Padding is explicit and symmetric wherever a
stride is 2 so that PyTorch (timm) and Caffe weights load one to one (SPEC §2).
"""

import os

import keras
from keras import layers

from sknet_keras.layers import BatchNorm, GroupConv2D, SelectiveKernel, SqueezeExcite
from sknet_keras.layers.initializers import BN_EPSILON, BN_MOMENTUM, conv_kernel_initializer
from sknet_keras.registry import ModelConfig, get_model_config, sk_attn_channels, units

POOLINGS = (None, "avg", "max")


def _bn(name):
    return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _conv1x1(filters, name, strides=1):
    return layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                         kernel_initializer=conv_kernel_initializer(), name=name)


def stem(x, config: ModelConfig):
    """7×7/2 conv → BN → ReLU → 3×3/2 max pool (timm: pad 1; Caffe: ceil mode = pad 0,1).

    The deep stem (SENet-154) replaces the 7×7 by three 3×3 conv → BN → ReLU (64/2, 64, 128),
    named conv1_1 .. conv1_3 as in the release.
    """
    if config.stem == "deep":
        widths = (config.stem_width, config.stem_width, 2 * config.stem_width)
        for i, width in enumerate(widths, start=1):
            x = GroupConv2D(width, 3, strides=2 if i == 1 else 1, name=f"conv1_{i}_conv")(x)
            x = _bn(f"conv1_{i}_bn")(x)
            x = layers.ReLU(name=f"conv1_{i}_relu")(x)
    else:
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = layers.Conv2D(config.stem_width, 7, strides=2, use_bias=False,
                          kernel_initializer=conv_kernel_initializer(), name="conv1_conv")(x)
        x = _bn("conv1_bn")(x)
        x = layers.ReLU(name="conv1_relu")(x)
    # Zero padding equals -inf padding here: the input is post-ReLU, so >= 0.
    pad = 1 if config.stem_pool == "symmetric" else ((0, 1), (0, 1))
    x = layers.ZeroPadding2D(pad, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def _spatial_mixer(x, config, stage, filters, strides, prefix):
    """The unit's k×k part: SK convolution, or grouped 3×3 → BN → ReLU."""
    if config.attention == "sk":
        sk = config.sk
        out = SelectiveKernel(
            filters,
            branches=sk.branches,
            groups=config.groups,
            attn_channels=sk_attn_channels(sk, filters, stage),
            reduction=sk.reduction,
            min_attn_channels=sk.min_attn_channels,
            attn_divisor=sk.attn_divisor,
            strides=strides,
            attention=sk.attention,
            split_input=sk.split_input,
            return_attention=sk.attention,
            name=prefix + "_sk",
        )(x)
        return out[0] if sk.attention else out
    x = GroupConv2D(filters, 3, strides=strides, groups=config.groups, name=prefix + "_conv")(x)
    x = _bn(prefix + "_bn")(x)
    return layers.ReLU(name=prefix + "_relu")(x)


def _shortcut(x, config, unit, prefix):
    if not unit.has_shortcut_conv:
        return x
    if config.shortcut_kernel == 3 and unit.strides > 1:  # SENet-154: 3×3/2, pad 1
        x = GroupConv2D(unit.out_channels, 3, strides=unit.strides, name=prefix + "_0_conv")(x)
    else:
        x = _conv1x1(unit.out_channels, prefix + "_0_conv", strides=unit.strides)(x)
    return _bn(prefix + "_0_bn")(x)


def _finish_unit(x, shortcut, config, prefix):
    if config.attention == "se":
        x = SqueezeExcite(config.se_reduction, name=prefix + "_se")(x)
    x = layers.Add(name=prefix + "_add")([shortcut, x])
    return layers.ReLU(name=prefix + "_out")(x)


def bottleneck_unit(x, config, unit, prefix):
    """1×1 reduce → [grouped 3×3 | SK] (carries the stride) → 1×1 expand → [SE] → + → ReLU.

    With `config.stride_in_reduce` (SE-ResNet release) the 1×1 reduce carries the stride.
    """
    shortcut = _shortcut(x, config, unit, prefix)
    reduce_strides, mixer_strides = ((unit.strides, 1) if config.stride_in_reduce
                                     else (1, unit.strides))
    x = _conv1x1(unit.reduce_width, prefix + "_1_conv", strides=reduce_strides)(x)
    x = _bn(prefix + "_1_bn")(x)
    x = layers.ReLU(name=prefix + "_1_relu")(x)
    x = _spatial_mixer(x, config, unit.stage, unit.width, mixer_strides, prefix + "_2")
    x = _conv1x1(unit.out_channels, prefix + "_3_conv")(x)
    x = _bn(prefix + "_3_bn")(x)
    return _finish_unit(x, shortcut, config, prefix)


def basic_unit(x, config, unit, prefix):
    """[3×3 | SK] (carries the stride) → 3×3 → BN → [SE] → + → ReLU."""
    shortcut = _shortcut(x, config, unit, prefix)
    x = _spatial_mixer(x, config, unit.stage, unit.width, unit.strides, prefix + "_1")
    x = GroupConv2D(unit.out_channels, 3, name=prefix + "_2_conv")(x)
    x = _bn(prefix + "_2_bn")(x)
    return _finish_unit(x, shortcut, config, prefix)


UNITS = {"bottleneck": bottleneck_unit, "basic": basic_unit}


def backbone(x, config: ModelConfig):
    """Stem and all stages; returns the last stage's feature map."""
    x = stem(x, config)
    build_unit = UNITS[config.block]
    for unit in units(config):
        x = build_unit(x, config, unit, unit.keras_prefix)
    return x


def _input_shape(input_shape, config, include_top, weights):
    """keras.applications' input-shape rules (channels_last)."""
    if input_shape is None:
        return (config.default_size, config.default_size, 3) if include_top else (None, None, 3)
    try:
        input_shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"`input_shape` must be a tuple of three integers; got input_shape={input_shape!r}"
        ) from None
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be a tuple of three integers (height, width, channels); "
            f"got input_shape={input_shape}"
        )
    h, w, c = input_shape
    if c is None or c < 1:
        raise ValueError(f"the channel count must be a positive integer; got input_shape={input_shape}")
    if weights is not None and c != 3:
        raise ValueError(
            f"pretrained weights need 3 input channels; got input_shape={input_shape}"
        )
    if any(d is not None and d < config.min_size for d in (h, w)):
        raise ValueError(
            f"Input size must be at least {config.min_size}x{config.min_size}; "
            f"got input_shape={input_shape}"
        )
    if include_top and (h is None or w is None):
        raise ValueError(
            "If `include_top` is True, you should specify a static `input_shape`. "
            f"Received: input_shape={input_shape}"
        )
    return input_shape


def build_model(
    model="sknet50",
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
):
    """Build a registry model with the `keras.applications` signature and behaviour.

    Args:
        model: registry name (`sknet_keras.registry.list_models()`) or a `ModelConfig`.
        include_top: add the global-average-pool + dense classifier.
        weights: None (random init), "imagenet", or the path of a weights file.
        input_tensor: optional tensor (e.g. output of `keras.Input` or other layers).
        input_shape: (H, W, C); H and W may be None when include_top is False.
        pooling: "avg", "max" or None for the feature output when include_top is False.
        classes: classifier size (include_top only).
        classifier_activation: activation of the classifier (None for logits).
        name: model name (default: the registry name).
    """
    config = get_model_config(model)
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "sknet_keras models support image_data_format 'channels_last' only; got "
            f"{keras.config.image_data_format()!r}"
        )
    if not (weights in (None, "imagenet") or isinstance(weights, (str, os.PathLike))):
        raise ValueError(
            "The `weights` argument should be either `None` (random initialization), "
            f"'imagenet', or the path to a weights file; got weights={weights!r}"
        )
    if weights == "imagenet":
        if config.pretrained is None:
            from sknet_keras.applications.pretrained import imagenet_weights

            imagenet_weights(config)  # raises the error that lists models with weights
        if include_top and classes != 1000:
            raise ValueError(
                "If using `weights='imagenet'` with `include_top=True`, `classes` should be "
                f"1000; got classes={classes}"
            )
    if weights not in (None, "imagenet") and not os.path.exists(weights):
        raise ValueError(f"weights file not found: {os.fspath(weights)!r}")
    if pooling not in POOLINGS:
        raise ValueError(
            f"`pooling` must be one of None, 'avg', 'max'; got pooling={pooling!r}"
        )
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"`classes` must be a positive integer; got classes={classes!r}")
    if include_top and classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError):
            raise ValueError(
                f"Unknown classifier_activation {classifier_activation!r}"
            ) from None

    input_shape = _input_shape(input_shape, config, include_top, weights)
    if input_tensor is None:
        img_input = layers.Input(shape=input_shape)
    elif not keras.backend.is_keras_tensor(input_tensor):
        img_input = layers.Input(tensor=input_tensor, shape=input_shape)
    else:
        img_input = input_tensor
    if img_input.shape[-1] is None or len(img_input.shape) != 4:
        raise ValueError(
            f"input_tensor must be a 4D (batch, height, width, channels) tensor with known "
            f"channels; got shape {tuple(img_input.shape)}"
        )

    x = backbone(img_input, config)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if config.dropout:
            x = layers.Dropout(config.dropout, name="top_dropout")(x)
        # float32 logits/probabilities under mixed precision (Keras' advice for the last layer).
        head_dtype = "float32" if keras.mixed_precision.dtype_policy().compute_dtype != "float32" else None
        x = layers.Dense(classes, activation=classifier_activation, dtype=head_dtype,
                         name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else img_input
    model = keras.Model(inputs, x, name=name or config.name)
    if weights == "imagenet":
        from sknet_keras.applications.pretrained import imagenet_weights

        weights = imagenet_weights(config)
    if weights is not None:
        from sknet_keras.applications.weights import load_weights

        load_weights(model, weights)
    return model
