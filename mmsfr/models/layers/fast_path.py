"""When inference kernels may replace the canonical ops (in place, ``out=``, C++).

The layers of mmsfr compute every forward in one of two ways with the same sums: the
canonical PyTorch ops that autograd, tracers, exporters and op counters expect, or an
inference path that writes into pre-allocated buffers, overwrites temporaries and may
call mmsfr's C++ operators. :func:`inference_fast_path` says when the eager inference
path applies; :func:`traced_inference` when ``torch.compile`` / ``torch.export`` trace
an inference forward, which keeps mmsfr's operators (``torch.ops.mmsfr.*``, known to
the dispatcher) in the graph; :func:`kernel_tensors` whether tensors are of the one
type those operators take.
"""
from __future__ import annotations

import torch

from ...ops import untraced_inference
from ...utils.compat import is_compiling, traces_mmsfr_operators

__all__ = ['inference_fast_path', 'kernel_tensor', 'kernel_tensors', 'traced_inference']


def _any_autocast() -> bool:
    """Whether autocast is on for the CPU or CUDA (for torch without the C call)."""
    return torch.is_autocast_enabled('cpu') or torch.is_autocast_enabled('cuda')


#: Whether autocast is on for any device type (one C call where torch has it).
_is_any_autocast_enabled = getattr(torch._C, '_is_any_autocast_enabled', _any_autocast)


def inference_fast_path() -> bool:
    """Whether in-place / re-associated inference kernels may replace canonical ops.

    True only when nothing needs the canonical op graph: inference that nothing
    records op by op (:func:`mmsfr.ops.untraced_inference`: no autograd recording, no
    ``torch.compile`` / ``torch.export`` / ONNX tracing, no ``TorchDispatchMode``
    observing the aten calls, as complexity counters count pooling by its op), and no
    autocast: autocast picks each op's dtype by the op, which the kernels writing into
    pre-allocated outputs (``out=``) cannot follow, so under autocast the models run
    the ops PyTorch would run with autograd, in the dtypes it chooses for them.
    """
    return untraced_inference() and not _is_any_autocast_enabled()


def traced_inference() -> bool:
    """Whether ``torch.compile`` or ``torch.export`` traces an inference forward that
    may keep mmsfr's C++ operators (``torch.ops.mmsfr.*``) in its graph.

    True while dynamo traces without autograd recording and without autocast, except
    for the ONNX exporter (its graph must consist of standard ONNX operators). The
    operators' Meta kernels let the tracer run them on tensors without data, and
    TorchInductor keeps their in-place writes into the dense blocks' buffers (no
    copies). Everything else under tracing takes the canonical ops, and so does every
    trace on torch < 2.6 (:func:`~mmsfr.utils.compat.traces_mmsfr_operators`).
    """
    return (_TRACES_OPERATORS and is_compiling() and not torch.is_grad_enabled()
            and not torch.onnx.is_in_onnx_export() and not _is_any_autocast_enabled())


#: Whether this torch's tracers may keep mmsfr's operators (torch >= 2.6).
_TRACES_OPERATORS = traces_mmsfr_operators()


def kernel_tensor(t: torch.Tensor) -> bool:
    """Whether ``t`` is a plain float32 CPU tensor (or parameter), the only type mmsfr's
    C++ operators take. An eager tensor subclass is not: its ``__torch_function__``
    must see the ops of the forward, which the canonical path runs. (Under
    ``torch.compile`` / ``torch.export`` the tracers' own tensor types stand in for
    plain tensors, and the tracers handle subclasses themselves.)

    Example:
        >>> kernel_tensor(torch.zeros(2)), kernel_tensor(torch.zeros(2).double())
        (True, False)
        >>> class Logged(torch.Tensor):  # a subclass, say one that logs its ops
        ...     pass
        >>> kernel_tensor(torch.nn.Parameter(torch.zeros(2))), kernel_tensor(
        ...     torch.zeros(2).as_subclass(Logged))
        (True, False)
    """
    return ((type(t) in _PLAIN_TENSORS or is_compiling())
            and t.dtype is torch.float32 and t.is_cpu)


#: The tensor types the kernels take (exactly these, not their subclasses).
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def kernel_tensors(*tensors: torch.Tensor | None) -> bool:
    """Whether every tensor given is a plain float32 CPU tensor (:func:`kernel_tensor`;
    None, an absent optional tensor, is skipped).

    Example:
        >>> kernel_tensors(torch.zeros(2), None), kernel_tensors(torch.zeros(2).double())
        (True, False)
    """
    return all(t is None or kernel_tensor(t) for t in tensors)
