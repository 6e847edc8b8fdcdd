"""Pooling computed from strided slices in inference (exact, faster on CPU).

PyTorch's CPU pooling kernels for NCHW tensors are slow for the small windows of
these networks: with one thread, the 3x3 stride-2 max-pool of ShuffleNetV2 1.5x's
24x112x112 stem output is the largest single op of its forward in ``torch.profiler``,
several times slower than the same maxima taken over strided slices. Both functions compute exactly what the
pooling op computes (maxima are exact; the 2x2 mean only re-associates its sum) and
fall back to the pooling op whenever :func:`~.fast_path.inference_fast_path` is off
(autograd, tracing, op counting).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .fast_path import inference_fast_path, kernel_tensors
from ... import ops

__all__ = ['FastMaxPool2d', 'avg_pool2x2', 'max_pool3x3s2']


def avg_pool2x2(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """2x2 average pooling, stride 2 (``nn.AvgPool2d(2, 2)``: odd edges are dropped).

    In :func:`~.fast_path.inference_fast_path` it is the mean of four strided
    slices, or one pass of the C++ operator :func:`mmsfr.ops.avg_pool2x2_` (float32 CPU).

    Args:
        x: ``(N, C, H, W)`` input.
        out: Write the result here instead of a new tensor, e.g. the first ``C``
            channels of the next dense block's buffer (``(N, C, H // 2, W // 2)``).

    Returns:
        The pooled tensor (``out`` if given).

    Example:
        >>> x = torch.rand(1, 3, 7, 6)
        >>> torch.allclose(avg_pool2x2(x), F.avg_pool2d(x, 2))
        True
        >>> buf = torch.empty(1, 5, 3, 3)
        >>> avg_pool2x2(x, out=buf[:, :3]).data_ptr() == buf.data_ptr()
        True
    """
    if not inference_fast_path():
        y = F.avg_pool2d(x, 2, 2)
        return y if out is None else out.copy_(y)
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    if ops.native_enabled() and kernel_tensors(x) and x.dim() == 4 and x.is_contiguous():
        if out is None:
            out = x.new_empty(*x.shape[:2], h // 2, w // 2)
        if kernel_tensors(out) and out.stride()[1:] == (h * w // 4, w // 2, 1):
            ops.avg_pool2x2_(out, x)
            return out
    top, bottom = x[..., 0:h:2, :w], x[..., 1:h:2, :w]
    rows = top + bottom
    if out is None:
        return (rows[..., 0::2] + rows[..., 1::2]).mul_(0.25)
    return torch.add(rows[..., 0::2], rows[..., 1::2], out=out).mul_(0.25)


def _max3_stride2(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over the windows ``2i-1, 2i, 2i+1`` (clipped at the edges) along ``dim``."""
    def every_other(t: torch.Tensor, start: int) -> torch.Tensor:
        return t[(slice(None), ) * dim + (slice(start, None, 2), )]

    out = every_other(x, 0).clone()  # element 2i; (size + 1) // 2 windows
    odd = every_other(x, 1)  # element 2i + 1 exists for i < size // 2
    head = out.narrow(dim, 0, odd.shape[dim])
    torch.maximum(head, odd, out=head)
    if out.shape[dim] > 1:  # element 2i - 1 for i >= 1
        tail = out.narrow(dim, 1, out.shape[dim] - 1)
        torch.maximum(tail, odd.narrow(dim, 0, tail.shape[dim]), out=tail)
    return out


def max_pool3x3s2(x: torch.Tensor) -> torch.Tensor:
    """3x3 max pooling, stride 2, padding 1 (``nn.MaxPool2d(3, 2, 1)``) of a 4-D map.

    In :func:`~.fast_path.inference_fast_path` the window maxima are taken
    separably, rows then columns, over strided slices; the result is bit-identical.

    Example:
        >>> x = torch.randn(1, 3, 9, 8)
        >>> with torch.no_grad():
        ...     torch.equal(max_pool3x3s2(x), F.max_pool2d(x, 3, 2, 1))
        True
    """
    if x.dim() != 4 or not inference_fast_path():
        return F.max_pool2d(x, 3, 2, 1)
    return _max3_stride2(_max3_stride2(x, 2), 3)


class FastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that takes :func:`max_pool3x3s2` for the 3x3 / stride 2 / padding
    1 window (plain, without indices or ceil mode) and the pooling op otherwise.

    Example:
        >>> pool = FastMaxPool2d(3, 2, 1)
        >>> pool(torch.rand(1, 8, 16, 16)).shape
        torch.Size([1, 8, 8, 8])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (_pair(self.kernel_size) == (3, 3) and _pair(self.stride) == (2, 2)
                and _pair(self.padding) == (1, 1) and _pair(self.dilation) == (1, 1)
                and not self.ceil_mode and not self.return_indices):
            return max_pool3x3s2(x)
        return super().forward(x)


def _pair(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
