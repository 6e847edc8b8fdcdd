"""A fully connected layer whose CPU inference on a few rows streams its weight."""
from __future__ import annotations

import torch
from torch import nn

from ... import ops
from .fast_path import inference_fast_path

__all__ = ['FastLinear', 'STREAMED_MAX_ROWS']

#: Inputs of at most this many rows take mmsfr's kernel (measured on a 1024 x 2064
#: weight, one thread: 2x faster than torch's product for 1 row, 1.25x for 8, a tie at
#: 32); more rows take ``nn.Linear``'s.
STREAMED_MAX_ROWS = 8


class FastLinear(nn.Linear):
    """``nn.Linear`` whose float32 CPU inference on at most :data:`STREAMED_MAX_ROWS`
    rows runs :func:`mmsfr.ops.linear_`, which reads each weight row from memory once.

    A classifier head at batch 1 is a matrix-vector product that only streams its
    weight (CondenseNetV2-C's 3.7M-parameter tail reads 15 MB per image); where MKL runs
    its generic code (AMD CPUs) torch's product streams it at about half the memory
    bandwidth. Everything else (autograd, tracing, export, autocast, other dtypes or
    devices, larger batches, the C++ operators off) runs ``nn.Linear``'s forward. The
    parameters, their names and initialisation are ``nn.Linear``'s, so checkpoints and
    mmengine's ``init_cfg`` with ``layer='Linear'`` apply unchanged.

    Example:
        >>> fc = FastLinear(16, 4)
        >>> x = torch.rand(1, 16)
        >>> with torch.no_grad():
        ...     torch.allclose(fc(x), nn.functional.linear(x, fc.weight, fc.bias), atol=1e-6)
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (The mode checks first: they keep tracers away from the shape test.)
        if (inference_fast_path() and ops.native_enabled() and x.dim() == 2
                and x.shape[0] <= STREAMED_MAX_ROWS and x.dtype is torch.float32 and x.is_cpu):
            weight, bias = self.weight, self.bias
            if weight.dtype is torch.float32 and weight.is_cpu and (
                    bias is None or bias.dtype is torch.float32 and bias.is_cpu):
                out = x.new_empty(x.shape[0], self.out_features)
                ops.linear_(out, x.contiguous(), weight.contiguous(),
                            None if bias is None else bias.contiguous())
                return out
        return super().forward(x)
