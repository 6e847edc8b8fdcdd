"""A fully connected layer whose CPU inference on a few rows streams its weight."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ... import ops
from .fast_path import inference_fast_path, kernel_tensors, traced_inference

__all__ = ['FastLinear', 'STREAMED_MAX_ROWS', 'streamed_linear']

#: Inputs of at most this many rows take mmsfr's kernel (measured on a 1024 x 2064
#: weight, one thread: 2x faster than torch's product for 1 row, 1.25x for 8, a tie at
#: 32); more rows take ``nn.Linear``'s.
STREAMED_MAX_ROWS = 8


def streamed_linear(x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through :func:`mmsfr.ops.linear_` for float32 CPU
    inference on at most :data:`STREAMED_MAX_ROWS` rows (see :class:`FastLinear`).

    Example:
        >>> x, weight = torch.rand(1, 16), torch.rand(4, 16)
        >>> with torch.no_grad():
        ...     torch.allclose(streamed_linear(x, weight), F.linear(x, weight), atol=1e-6)
        True
    """
    # (The mode checks first: they keep tracers away from the shape test.)
    if ((inference_fast_path() or traced_inference()) and ops.native_enabled()
            and x.dim() == 2 and x.shape[0] <= STREAMED_MAX_ROWS
            and kernel_tensors(x, weight, bias)):
        out = x.new_empty(x.shape[0], weight.shape[0])
        ops.linear_(out, x.contiguous(), weight.contiguous(),
                    None if bias is None else bias.contiguous())
        return out
    return F.linear(x, weight, bias)


class FastLinear(nn.Linear):
    """``nn.Linear`` whose float32 CPU inference on at most :data:`STREAMED_MAX_ROWS`
    rows runs :func:`mmsfr.ops.linear_`, which reads each weight row from memory once.

    A classifier head at batch 1 is a matrix-vector product that only streams its
    weight (CondenseNetV2-C's 3.7M-parameter tail reads 15 MB per image); where MKL runs
    its generic code (AMD CPUs) torch's product streams it at about half the memory
    bandwidth. ``torch.compile`` / ``torch.export`` of an inference forward keep the
    operator, as they keep the dense layers' (the ONNX exporter does not). Everything
    else (autograd, ``torch.jit`` tracing, ONNX export, autocast, other dtypes or
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
        return streamed_linear(x, self.weight, self.bias)
