"""The optional C++ kernels of mmsfr (``mmsfr._ext``) and the switch that selects them.

``pip install --no-build-isolation -e .`` (``make setup``) compiles ``mmsfr/csrc`` into
``mmsfr._ext``: fused CPU inference kernels of the deploy CondenseNetV2 dense layer
(LGC + grouped 3x3 conv in one call, the SE in one, the SFR in one) and of the 2x2
average pooling between its blocks; see ``mmsfr/csrc/dense_layer.cpp``. They run on
torch's intra-op threads when built with OpenMP (``setup.py`` adds it where torch runs
on OpenMP, e.g. Linux); a build without it (e.g. macOS) runs them on one thread, and
loading it warns when torch uses more.
When the extension is built, deploy CondenseNetV2 models use it for float32 CPU
inference (``torch.no_grad`` / ``torch.inference_mode``, eval-mode BatchNorms);
everything else, and every model when it is missing, runs the PyTorch path, which
computes the same sums.

Switch it off for the process with ``MMSFR_NATIVE=0`` in the environment, or for a
block of code with :func:`native_kernels`. Like torch's own mode context managers
(``torch.no_grad``), the switch is per thread: it applies to the thread that enters the
block, and every thread starts from the process default.

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
import threading
import warnings
from types import ModuleType
from typing import Iterator

import torch
from torch import nn

from .se import SqueezeExcitation

__all__ = ['activation_code', 'native_available', 'native_enabled', 'native_kernels',
           'native_ops', 'se_arguments']


#: The functions this version of mmsfr calls in the extension.
REQUIRED = ('lgc_conv_', 'sfr_', 'se_', 'avg_pool2x2_', 'uses_avx2', 'set_avx2',
            'parallel_threads')
#: The version of the kernels' arguments (the extension's ``API_VERSION``): 2 since the
#: kernels take each BatchNorm's own tensors and the conv weights as stored.
API_VERSION = 2
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
    version = getattr(ext, 'API_VERSION', 1)
    if missing or version != API_VERSION:  # built from older sources
        what = (f'no {", ".join(missing)}' if missing else
                f'kernel arguments of version {version}, this mmsfr needs {API_VERSION}')
        warnings.warn(f'mmsfr._ext is out of date ({what}), using PyTorch kernels; '
                      f'rebuild it with `{_REBUILD}`')
        return None, f'out of date (rebuild with `{_REBUILD}`)'
    _warn_if_serial(ext)
    return ext, 'built'


def _warn_if_serial(ext: ModuleType) -> None:
    """Warn when the kernels of ``ext`` run on one thread while torch uses more.

    ATen's ``parallel_for`` is inline OpenMP code: an extension compiled without
    ``-fopenmp`` (macOS, or a compiler without OpenMP) runs every parallel loop on the
    calling thread, which ``parallel_threads`` reports.
    """
    threads = torch.get_num_threads()
    if threads > 1 and ext.parallel_threads(threads) == 1:
        warnings.warn(
            f'mmsfr._ext was built without OpenMP, so its C++ kernels run on one thread '
            f'while torch uses {threads}; set MMSFR_NATIVE=0 to run deploy CondenseNetV2 '
            'models with PyTorch ops on all threads instead (setup.py builds the kernels '
            'with OpenMP where torch runs on it, on Linux)')


_EXT, STATUS = _load()


class _Switch(threading.local):
    """Whether the kernels are on, per thread; a new thread starts from the class
    attribute, the process default (``MMSFR_NATIVE``)."""

    enabled: bool = os.environ.get('MMSFR_NATIVE', '1') != '0'


_switch = _Switch()

#: Codes of the activations the kernels apply, keyed by module type.
_ACTIVATION_CODES: dict[type, int] = {nn.Identity: 0, nn.ReLU: 1, nn.Hardswish: 2}


def native_available() -> bool:
    """Whether ``mmsfr._ext`` is built and loads (``native.STATUS`` says why not)."""
    return _EXT is not None


def native_enabled() -> bool:
    """Whether deploy models use the C++ kernels now, in this thread: available and
    switched on."""
    return _EXT is not None and _switch.enabled


def native_ops() -> ModuleType | None:
    """The extension module when :func:`native_enabled`, else None."""
    return _EXT if _switch.enabled else None


@contextlib.contextmanager
def native_kernels(enabled: bool) -> Iterator[None]:
    """Switch the C++ kernels on or off inside a ``with`` block (e.g. to compare).

    The switch is thread-local, like ``torch.no_grad``: other threads keep their own
    setting.

    Args:
        enabled: Use the kernels (if built) inside the block.
    """
    previous, _switch.enabled = _switch.enabled, bool(enabled)
    try:
        yield
    finally:
        _switch.enabled = previous


def activation_code(act: nn.Module) -> int | None:
    """The kernels' code of an activation module (0 identity, 1 ReLU, 2 hard-swish), or
    None for an activation they do not implement."""
    return _ACTIVATION_CODES.get(type(act))


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
