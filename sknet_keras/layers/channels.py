"""Channel arithmetic shared by layers and model definitions."""


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Round `value` to the nearest multiple of `divisor`, never dropping more than 10 %
    (timm's rule for attention widths)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < round_limit * value:
        new += divisor
    return new


def attn_channels(channels: int, reduction: int = 16, min_channels: int = 32,
                  divisor: int = 1) -> int:
    """Width d of the SK attention bottleneck for a unit of `channels` channels.

    The paper: d = max(C / r, L) (r = 16, L = 32). timm's SK-ResNets round C / r with
    `make_divisible(C / r, divisor)` first (r = 8, L = 16, divisor 16).
    """
    if divisor <= 1:
        reduced = channels // reduction
    else:
        reduced = make_divisible(channels / reduction, divisor)
    return max(reduced, min_channels)
