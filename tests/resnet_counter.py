"""Trainable parameters and multiply-adds of a ResNet-family config, by arithmetic.

Written from the architecture (docs/architecture.md), independently of the Keras builder,
so that tests can hold the built models to it.
"""

import math


def _conv(k, c_in, c_out, groups=1):
    return k * k * (c_in // groups) * c_out


def _bn(c):
    return 2 * c  # gamma, beta (moving statistics are not trainable)


def _out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _stem(config, size):
    """(params, macs, channels, spatial size after the stem)."""
    w = config.stem_width
    if config.stem == "cifar":
        return _conv(3, 3, w) + _bn(w), _conv(3, 3, w) * size * size, w, size
    if config.stem == "deep":
        params = _conv(3, 3, w) + _conv(3, w, w) + _conv(3, w, 2 * w) + _bn(w) * 2 + _bn(2 * w)
        s = _out(size, 3, 2, 1)
        macs = (_conv(3, 3, w) + _conv(3, w, w) + _conv(3, w, 2 * w)) * s * s
        c = 2 * w
    else:
        params, s = _conv(7, 3, w) + _bn(w), _out(size, 7, 2, 3)
        macs, c = _conv(7, 3, w) * s * s, w
    s = _out(s, 3, 2, 1) if config.stem_pool == "symmetric" else math.ceil((s - 3) / 2) + 1
    return params, macs, c, s


def _attn_width(sk, channels, stage):
    """d of an SK unit, from the rules as the papers and timm state them (not the package's
    code): the paper's max(C // r, L); timm's SK-ResNets first round C / r to the nearest
    multiple of `attn_divisor`, moving up one multiple if that lost more than 10 %; the
    released SKNet-101 overrides d per stage."""
    if sk.stage_attn_channels is not None and sk.stage_attn_channels[stage] is not None:
        return sk.stage_attn_channels[stage]
    if sk.attn_divisor > 1:
        div, value = sk.attn_divisor, channels / sk.reduction
        reduced = max(div, int(value + div / 2) // div * div)
        reduced += div if reduced < 0.9 * value else 0
    else:
        reduced = channels // sk.reduction
    return max(reduced, sk.min_attn_channels)


def _mixer(config, stage, c_in, width, size):
    """(params, macs) of the 3×3 / SK part on a `size`² output."""
    if config.attention != "sk":
        conv = _conv(3, c_in, width, config.groups)
        return conv + _bn(width), conv * size * size
    sk = config.sk
    m = len(sk.branches)
    c_branch = c_in // m if sk.split_input else c_in
    params = macs = 0
    for k, _, g in sk.branches:
        conv = _conv(k, c_branch, width, g or config.groups)
        params, macs = params + conv + _bn(width), macs + conv * size * size
    if sk.attention:
        d = _attn_width(sk, width, stage)
        params += width * d + _bn(d) + d * m * width
        macs += width * d + d * m * width
    return params, macs


def count(config, size=224, classes=1000):
    """(trainable params, multiply-adds per image) with the classifier, at size × size."""
    params, macs, c, s = _stem(config, size)
    reduce_widths = config.reduce_widths or config.widths
    for stage, (depth, width, rd, out) in enumerate(
            zip(config.depths, config.widths, reduce_widths, config.out_channels)):
        for index in range(depth):
            stride = 2 if index == 0 and stage > 0 else 1
            s_out = _out(s, 3, stride, 1)
            if stride != 1 or c != out:
                k = config.shortcut_kernel if stride > 1 else 1
                params += _conv(k, c, out) + _bn(out)
                macs += _conv(k, c, out) * s_out * s_out
            if config.block == "bottleneck":
                s_red = s_out if config.stride_in_reduce else s
                params += _conv(1, c, rd) + _bn(rd)
                macs += _conv(1, c, rd) * s_red * s_red
                p, mm = _mixer(config, stage, rd, width, s_out)
                params, macs = params + p, macs + mm
                params += _conv(1, width, out) + _bn(out)
                macs += _conv(1, width, out) * s_out * s_out
            else:
                p, mm = _mixer(config, stage, c, width, s_out)
                params += p + _conv(3, width, out) + _bn(out)
                macs += mm + _conv(3, width, out) * s_out * s_out
            if config.attention == "se":
                r = out // config.se_reduction
                params += out * r + r + r * out + out
                macs += 2 * out * r
            c, s = out, s_out
    return params + c * classes + classes, macs + c * classes
