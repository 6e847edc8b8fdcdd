"""The optional C++ kernels of mmsfr (``mmsfr._ext``) and the switch that selects them.

``pip install --no-build-isolation -e .`` (``make setup``) compiles ``mmsfr/csrc`` into
``mmsfr._ext``: fused CPU inference kernels of the deploy CondenseNetV2 dense layer
(LGC + grouped 3x3 conv in one call, the SE in one, the SFR in one) and of the 2x2
average pooling between its blocks; see ``mmsfr/csrc/dense_layer.cpp``. They run on
torch's intra-op threads.
When the extension is built, deploy CondenseNetV2 models use it for float32 CPU
inference (``torch.no_grad`` / ``torch.inference_mode``); everything else, and every
model when it is missing, runs the PyTorch path, which computes the same sums.

Switch it off for a process with ``MMSFR_NATIVE=0`` in the environment, or for a block
of code with :func:`native_kernels`.

Example:
    >>> from mmsfr.models.layers import native
    >>> with native.native_kernels(False):
    ...     native.native_enabled()
    False
"""
from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from types import ModuleType
from typing import Callable, Iterator

import torch
from torch import nn

from .condense import _hardswish_, _identity
from .se import SqueezeExcitation

__all__ = ['activation_code', 'native_available', 'native_enabled', 'native_kernels',
           'native_ops', 'se_arguments']


#: The functions this version of mmsfr calls in the extension.
REQUIRED = ('lgc_conv_', 'sfr_', 'se_', 'avg_pool2x2_', 'uses_avx2', 'set_avx2',
            'parallel_threads')
_REBUILD = 'pip install --no-build-isolation -e .'


def _load() -> tuple[ModuleType | None, str]:
    try:
        ext = importlib.import_module('mmsfr._ext')
    except ModuleNotFoundError as err:
        if err.name != 'mmsfr._ext':
            raise
        return None, f'not built (install with `{_REBUILD}`)'
    except ImportError as err:  # built against another torch, missing symbols, ...
        warnings.warn(f'mmsfr._ext could not be loaded, using PyTorch kernels: {err}')
        return None, f'failed to load: {err}'
    missing = [name for name in REQUIRED if not hasattr(ext, name)]
    if missing:  # built from older sources
        warnings.warn(f'mmsfr._ext is out of date (no {", ".join(missing)}), using PyTorch '
                      f'kernels; rebuild it with `{_REBUILD}`')
        return None, f'out of date (rebuild with `{_REBUILD}`)'
    return ext, 'built'


_EXT, STATUS = _load()
_enabled = os.environ.get('MMSFR_NATIVE', '1') != '0'

#: Codes of the activations the kernels apply, keyed by the in-place functions of
#: :func:`~mmsfr.models.layers.condense.inplace_activation`.
_ACTIVATION_CODES: dict[Callable, int] = {_identity: 0, torch.relu_: 1, _hardswish_: 2}


def native_available() -> bool:
    """Whether ``mmsfr._ext`` is built and loads (``native.STATUS`` says why not)."""
    return _EXT is not None


def native_enabled() -> bool:
    """Whether deploy models use the C++ kernels now: available and switched on."""
    return _EXT is not None and _enabled


def native_ops() -> ModuleType | None:
    """The extension module when :func:`native_enabled`, else None."""
    return _EXT if _enabled else None


@contextlib.contextmanager
def native_kernels(enabled: bool) -> Iterator[None]:
    """Switch the C++ kernels on or off inside a ``with`` block (e.g. to compare).

    Args:
        enabled: Use the kernels (if built) inside the block.
    """
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def activation_code(act: Callable[[torch.Tensor], torch.Tensor]) -> int | None:
    """The kernels' code of an in-place activation function (0 identity, 1 ReLU,
    2 hard-swish), or None for an activation they do not implement."""
    return _ACTIVATION_CODES.get(act)


def se_arguments(se: SqueezeExcitation) -> tuple | None:
    """The arguments of the ``se_`` kernel after the buffer, channel count and growth
    (``w1, b1, w2, b2, gate``) for a Linear-form :class:`SqueezeExcitation` with float32
    CPU weights; None for any other (it then runs as PyTorch ops)."""
    if se.with_norm:
        return None
    squeeze, _, excite = se.fc
    tensors = [t for t in (squeeze.weight, squeeze.bias, excite.weight, excite.bias)
               if t is not None]
    if any(t.dtype != torch.float32 or t.device.type != 'cpu' or not t.is_contiguous()
           for t in tensors):
        return None
    gate = 0 if isinstance(se.gate, nn.Sigmoid) else 1
    return squeeze.weight, squeeze.bias, excite.weight, excite.bias, gate
