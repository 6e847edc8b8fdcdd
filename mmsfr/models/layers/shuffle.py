"""Channel permutations used by ShuffleNets, LGC and SFR."""
from __future__ import annotations

import torch


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` contiguous channel groups (ShuffleNet's shuffle).

    Channel ``g * (C // groups) + k`` of the input becomes channel ``k * groups + g``.

    Args:
        x: Tensor of shape (N, C, H, W).
        groups: Number of groups; must divide C.

    Returns:
        The shuffled tensor, same shape.

    Example:
        >>> x = torch.arange(6.).view(1, 6, 1, 1)
        >>> channel_shuffle(x, 2).flatten().tolist()
        [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    """
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f'channel_shuffle: {c} channels cannot be split into {groups} groups')
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
