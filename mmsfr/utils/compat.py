"""What differs between the supported torch releases (2.1 to 2.14), in one place."""
from __future__ import annotations

import torch

__all__ = ['TORCH_VERSION', 'is_compiling', 'is_exporting', 'needs_weights_only_allow_list',
           'traces_mmsfr_operators']

#: ``(major, minor)`` of the running torch.
TORCH_VERSION: tuple[int, int] = tuple(
    int(part) for part in torch.__version__.split('+')[0].split('.')[:2])


def is_compiling() -> bool:
    """Whether ``torch.compile`` (dynamo) is tracing the caller.

    ``torch.compiler.is_compiling`` exists from torch 2.3 on; earlier releases have
    ``torch._dynamo.is_compiling``.
    """
    compiler = getattr(torch, 'compiler', None)
    if compiler is not None and hasattr(compiler, 'is_compiling'):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()


def is_exporting() -> bool:
    """Whether ``torch.export`` (which the ONNX exporter drives) is tracing the caller
    (``torch.compiler.is_exporting``, torch >= 2.5; False before)."""
    compiler = getattr(torch, 'compiler', None)
    return bool(compiler is not None and hasattr(compiler, 'is_exporting')
                and compiler.is_exporting())


def needs_weights_only_allow_list() -> bool:
    """Whether ``torch.load`` defaults to ``weights_only=True`` (torch >= 2.6), so
    that mmengine's checkpoints need their globals allow-listed."""
    return TORCH_VERSION >= (2, 6)


def traces_mmsfr_operators() -> bool:
    """Whether ``torch.compile`` / ``torch.export`` may keep mmsfr's C++ operators in
    their graphs (torch >= 2.6). Older dynamo releases break the graph at the Python
    that collects the operators' arguments (2.1: dozens of breaks, then an internal
    assertion), so there the models trace their PyTorch ops under ``torch.compile``."""
    return TORCH_VERSION >= (2, 6)
