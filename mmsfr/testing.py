"""Helpers for tests and benchmarks: deterministic non-trivial model states."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['randomise_bn', 'rel_diff']


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial, deterministic statistics and affine parameters.

    Every ``_BatchNorm`` (``BatchNorm2d``, ``SyncBatchNorm``, ...) is set; the values
    depend on the seed and the order of the norms only, not on their device or dtype
    (they are drawn on the CPU and copied).

    Conversion, parity and speed checks need them: default BN (mean 0, var 1, weight 1
    or, for SFR, 0) would hide mistakes in the channel bookkeeping and make SFR a no-op.

    Args:
        model: Modified in place.
        seed: Seed of the generator the values are drawn from.

    Returns:
        ``model``.

    Example:
        >>> bn = randomise_bn(nn.BatchNorm2d(4))
        >>> bool((bn.running_var >= 0.5).all())
        True
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                values = (torch.rand(n, generator=g) - 0.5, torch.rand(n, generator=g) + 0.5,
                          torch.rand(n, generator=g) + 0.5,
                          torch.rand(n, generator=g) * 0.4 - 0.2)
                targets = (m.running_mean, m.running_var, m.weight, m.bias)
                for target, value in zip(targets, values):
                    if target is not None:  # no running statistics / affine parameters
                        target.copy_(value)  # on the norm's device, in its dtype
    return model


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of ``a`` and ``b``, relative to ``b``'s largest value.

    The measure every parity check of mmsfr uses: ``max |a - b| / max |b|``. An
    all-zero ``b`` gives ``inf`` or ``nan``, which fails every ``< tolerance`` check:
    a reference that is all zeros proves nothing.

    Args:
        a: The tensor under test.
        b: The reference, same shape as ``a``.

    Returns:
        The relative difference as a float.

    Example:
        >>> round(rel_diff(torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0])), 6)
        0.25
    """
    return ((a - b).abs().max() / b.abs().max()).item()
