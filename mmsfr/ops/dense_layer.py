"""Typed wrappers of mmsfr's C++ operators (``torch.ops.mmsfr.*``).

Each function calls one operator of ``mmsfr/csrc/ops.cpp``: fused float32 CPU
inference kernels of a deploy CondenseNetV2 dense layer that write into the dense
block's pre-allocated ``(N, C, H, W)`` buffer, and a fully connected layer for the
few rows of a classifier head (:func:`linear_`). They need the extension
(:func:`~mmsfr.ops.native_available`); :mod:`mmsfr.models.layers.dense_plan` collects
their arguments from a layer's modules, and :class:`~mmsfr.models.backbones.DenseBlock`
calls them. Every argument is checked by the kernel (a ``RuntimeError`` naming it).

BatchNorms are passed as their four tensors ``[weight, bias, running_mean,
running_var]`` and eps, conv weights as stored ``(out, in / groups, kh, kw)``:
the kernels derive everything else on every call.

A call reaches its CPU kernel one of two ways. In plain eager code (:func:`plain_eager`:
no autograd recording, tracing, profiler, function mode or dispatch mode) it calls the
extension's own binding of the kernel (``mmsfr._ext.<name>``); otherwise it goes through
PyTorch's dispatcher (``torch.ops.mmsfr.<name>``), where ``torch.compile``,
``torch.export``, the profiler, ``TorchFunctionMode`` s and ``TorchDispatchMode`` s see
the operator. The kernel, its argument checks, its errors and its results are the same
either way; the binding skips the dispatcher's boxing of the arguments, up to 4 us per
call, of which a deploy CondenseNetV2-C makes 98 per forward
(``bench/dispatch_overhead.py`` times both ways).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch._C import _is_torch_function_mode_enabled
from torch._C._autograd import _profiler_enabled
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..utils.compat import is_compiling
from .loading import _KERNELS

__all__ = ['ISAS', 'avg_pool2x2_', 'best_isa', 'isa', 'lgc_conv_', 'linear_',
           'parallel_threads', 'plain_eager', 'se_', 'set_avx2', 'set_isa', 'sfr_',
           'untraced_inference', 'uses_avx2']


def untraced_inference() -> bool:
    """Whether the caller runs inference that nothing records op by op: no autograd
    recording, no ``torch.compile`` / ``torch.export`` / ``torch.jit`` (ONNX) tracing and
    no ``TorchDispatchMode`` observing the calls (complexity counters count ops by name).

    Example:
        >>> with torch.no_grad():
        ...     untraced_inference()
        True
        >>> untraced_inference()  # autograd records
        False
    """
    # (is_compiling first: torch.compile traces this function and stops there.)
    return not (is_compiling() or torch.is_grad_enabled() or torch.jit.is_tracing()
                or _get_current_dispatch_mode() is not None)


def plain_eager() -> bool:
    """Whether nothing but the kernel needs to see an operator call: inference that
    nothing records op by op (:func:`untraced_inference`), no profiler and no
    ``TorchFunctionMode`` (which sees ``torch.ops`` calls). Such calls go straight to
    the kernels.

    Example:
        >>> with torch.no_grad():
        ...     plain_eager()
        True
        >>> with torch.no_grad(), torch.profiler.profile():  # the profiler records ops
        ...     plain_eager()
        False
    """
    return (untraced_inference() and not _profiler_enabled()
            and not _is_torch_function_mode_enabled())


def _call(name: str, *args) -> None:
    """Run tensor operator ``name`` on ``args``: straight into the extension's binding of
    its CPU kernel in plain eager code, else through the dispatcher."""
    kernel = _KERNELS.get(name) if plain_eager() else None
    if kernel is not None:
        kernel(*args)
    else:
        getattr(torch.ops.mmsfr, name)(*args)


def lgc_conv_(buf: torch.Tensor, channels: int, index: torch.Tensor,
              norm: Sequence[torch.Tensor], eps: float, act: int, weight: torch.Tensor,
              groups: int, norm_2: Sequence[torch.Tensor], eps_2: float, act_2: int,
              conv_weight: torch.Tensor) -> None:
    """LGC -> BN -> act -> grouped 3x3 conv of one dense layer, into ``buf``.

    Reads ``buf[:, :channels]`` and writes ``buf[:, channels:channels + growth]``
    (``growth = conv_weight.shape[0]``).

    Args:
        buf: The dense block's contiguous float32 buffer.
        channels: The layer's input channels.
        index: The LGC's input channels (int64).
        norm / eps / act: The LGC's BN over the selected channels and its activation
            code (0 identity, 1 ReLU, 2 hard-swish).
        weight / groups: The LGC's grouped 1x1 conv (its output shuffle applied).
        norm_2 / eps_2 / act_2: ``conv_2``'s BN and activation.
        conv_weight: ``conv_2``'s grouped 3x3 conv (stride 1, padding 1, ``groups``).
    """
    _call('lgc_conv_', buf, channels, index, list(norm), eps, act, weight, groups,
          list(norm_2), eps_2, act_2, conv_weight)


def sfr_(buf: torch.Tensor, channels: int, growth: int, norm: Sequence[torch.Tensor],
         eps: float, act: int, weight: torch.Tensor, groups: int,
         index: torch.Tensor) -> None:
    """Sparse feature reactivation of one dense layer, in ``buf``.

    BN -> act over the ``growth`` new channels after ``channels``, the grouped 1x1 conv
    on their shuffled order, output ``j`` added into old channel ``index[j]``.
    """
    _call('sfr_', buf, channels, growth, list(norm), eps, act, weight, groups, index)


def se_(buf: torch.Tensor, channels: int, growth: int, w1: torch.Tensor,
        b1: torch.Tensor | None, w2: torch.Tensor, b2: torch.Tensor | None,
        gate: int) -> None:
    """Squeeze-excite (Linear form) of ``buf[:, channels:channels + growth]`` in place:
    global mean -> ``w1`` -> ReLU -> ``w2`` -> gate (0 sigmoid, 1 hard-sigmoid)."""
    _call('se_', buf, channels, growth, w1, b1, w2, b2, gate)


def avg_pool2x2_(out: torch.Tensor, x: torch.Tensor) -> None:
    """2x2 average pooling, stride 2, of ``x`` ``(N, C, H, W)`` into ``out[:, :C]``.

    ``out`` is ``(N, C' >= C, H // 2, W // 2)`` with contiguous planes, e.g. the next
    dense block's buffer or a channel slice of it.

    Example:
        >>> from mmsfr.ops import native_available
        >>> x = torch.rand(1, 2, 4, 4)
        >>> out = torch.zeros(1, 3, 2, 2)
        >>> if native_available():
        ...     avg_pool2x2_(out, x)
        ... else:
        ...     out[:, :2] = torch.nn.functional.avg_pool2d(x, 2)
        >>> torch.allclose(out[:, :2], torch.nn.functional.avg_pool2d(x, 2))
        True
    """
    _call('avg_pool2x2_', out, x)


def linear_(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
            bias: torch.Tensor | None) -> None:
    """``out = x @ weight.T + bias`` for ``x`` ``(M, K)``, ``weight`` ``(N, K)``, ``bias``
    ``(N,)`` or None and ``out`` ``(M, N)``, all contiguous float32 CPU tensors.

    Each weight row is read from memory once for all ``M`` rows of ``x``: for the few
    rows of a classifier head at inference it streams the weight faster than BLAS
    matrix-vector products where MKL runs its generic code (AMD CPUs; measured by
    ``bench/linear_head.py``). ``out`` must not overlap the inputs.

    Example:
        >>> from mmsfr.ops import native_available
        >>> x, weight, bias = torch.rand(2, 8), torch.rand(3, 8), torch.rand(3)
        >>> out = torch.empty(2, 3)
        >>> if native_available():
        ...     linear_(out, x, weight, bias)
        ... else:
        ...     out = torch.nn.functional.linear(x, weight, bias)
        >>> torch.allclose(out, torch.nn.functional.linear(x, weight, bias))
        True
    """
    _call('linear_', out, x, weight, bias)


#: The kernels' instruction sets, fastest first.
ISAS = ('avx512', 'avx2', 'generic')


def isa() -> str:
    """The instruction set the kernels run: ``'avx512'`` (AVX-512F/VL/DQ, 16-float
    vectors), ``'avx2'`` (AVX2 + FMA, 8-float vectors) or ``'generic'`` (the baseline
    code). By default the best one the CPU has (:func:`best_isa`).

    Example:
        >>> from mmsfr.ops import native_available
        >>> isa() in ISAS if native_available() else True
        True
    """
    return torch.ops.mmsfr.isa()


def best_isa() -> str:
    """The fastest instruction set of :data:`ISAS` this CPU runs."""
    return torch.ops.mmsfr.best_isa()


def set_isa(name: str) -> str:
    """Run the kernels compiled for instruction set ``name`` (one of :data:`ISAS`, at
    most :func:`best_isa`); returns the previous one.

    Raises:
        RuntimeError: ``name`` is not an instruction set, or this CPU cannot run it.

    Example:
        >>> from mmsfr.ops import native_available
        >>> if native_available():
        ...     previous = set_isa('generic')
        ...     assert isa() == 'generic'
        ...     _ = set_isa(previous)
    """
    return torch.ops.mmsfr.set_isa(name)


def uses_avx2() -> bool:
    """Whether the kernels run vector code (AVX2 + FMA or AVX-512), not the baseline
    code."""
    return isa() != 'generic'


def set_avx2(on: bool) -> bool:
    """Run the best vector code of this CPU (``on``) or the baseline code; returns
    whether vector code ran before. Raises on a CPU without AVX2 + FMA when ``on``."""
    previous = uses_avx2()
    set_isa(best_isa() if on else 'generic')
    return previous


def parallel_threads(tasks: int) -> int:
    """Threads that run a parallel loop of ``tasks`` tasks (at most
    ``torch.get_num_threads()``; 1 for an extension built without OpenMP)."""
    return torch.ops.mmsfr.parallel_threads(tasks)
