"""Loading mmsfr's C++ operators (``mmsfr._ext``) and the switch that selects them.

``pip install --no-build-isolation -e .`` (``make setup``) compiles ``mmsfr/csrc`` into
``mmsfr._ext``; importing it registers the operators with PyTorch's dispatcher as
``torch.ops.mmsfr.*`` (schemas in ``mmsfr/csrc/ops.cpp``, CPU kernels in
``mmsfr/csrc/cpu/``), whose CPU kernels the module also binds as its own functions
(:data:`KERNELS`). They run on torch's intra-op threads when built with OpenMP
(``setup.py`` adds it where torch runs on OpenMP, e.g. Linux); a build without it
(e.g. macOS) runs them on one thread, and loading it warns when torch uses more.

When the extension is built, deploy CondenseNetV2 models use it for float32 CPU
inference (``torch.no_grad`` / ``torch.inference_mode``, eval-mode BatchNorms), in
eager mode and under ``torch.compile``; everything else, and every model when it is
missing, runs PyTorch ops, which compute the same sums.

Switch the operators off for the process with ``MMSFR_NATIVE=0`` in the environment,
or for a block of code with :func:`native_kernels`. Like torch's own mode context
managers (``torch.no_grad``), the switch is per thread: it applies to the thread that
enters the block, and every thread starts from the process default.

Example:
    >>> from mmsfr import ops
    >>> with ops.native_kernels(False):
    ...     ops.native_enabled()
    False
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
from typing import Callable, Iterator

import torch

__all__ = ['API_VERSION', 'KERNELS', 'REQUIRED', 'STATUS', 'native_available',
           'native_enabled', 'native_kernels']

#: The tensor operators whose CPU kernels the extension also binds as its own functions
#: (``mmsfr._ext.<name>``), which plain eager calls take (:mod:`.dense_layer`).
KERNELS = ('lgc_conv_', 'sfr_', 'se_', 'avg_pool2x2_', 'linear_')
#: The operators this version of mmsfr calls (``torch.ops.mmsfr.<name>``).
REQUIRED = KERNELS + ('isa', 'best_isa', 'set_isa', 'parallel_threads')
#: The version of the operators' arguments (the extension's ``API_VERSION``): 6 since
#: the extension binds the kernels as its own functions too (5: ``linear_``; 4: the
#: kernels come in three instruction sets; 3: registered with the dispatcher; 2:
#: BatchNorms as their own tensors).
API_VERSION = 6
_REBUILD = 'pip install --no-build-isolation -e .'


def has_op(name: str) -> bool:
    """Whether ``torch.ops.mmsfr.<name>`` is registered."""
    return hasattr(torch.ops.mmsfr, name)


def _load() -> tuple[bool, str, dict[str, Callable[..., None]]]:
    """Import the extension and check it: ``(usable, status, kernels)``, ``kernels``
    being the extension's functions of :data:`KERNELS` by name (empty unless usable)."""
    try:
        ext = importlib.import_module('mmsfr._ext')
    except ModuleNotFoundError as err:
        if err.name != 'mmsfr._ext':
            raise
        return False, f'not built (install with `{_REBUILD}`)', {}
    except ImportError as err:  # built against another torch, missing symbols, ...
        warnings.warn(f'mmsfr._ext could not be loaded, using PyTorch kernels: {err}')
        return False, f'failed to load: {err}', {}
    version = getattr(ext, 'API_VERSION', 1)
    missing = [] if version != API_VERSION else (
        [n for n in REQUIRED if not has_op(n)]
        + [f'mmsfr._ext.{n}' for n in KERNELS if not callable(getattr(ext, n, None))])
    if missing or version != API_VERSION:  # built from older sources
        what = (f'no {", ".join(missing)}' if missing else
                f'operator arguments of version {version}, this mmsfr needs {API_VERSION}')
        warnings.warn(f'mmsfr._ext is out of date ({what}), using PyTorch kernels; '
                      f'rebuild it with `{_REBUILD}`')
        return False, f'out of date (rebuild with `{_REBUILD}`)', {}
    _warn_if_serial()
    return True, 'built', {name: getattr(ext, name) for name in KERNELS}


def _parallel_threads(tasks: int) -> int:
    """The extension's thread probe (``torch.ops.mmsfr.parallel_threads``)."""
    return torch.ops.mmsfr.parallel_threads(tasks)


def _warn_if_serial() -> None:
    """Warn when the operators run on one thread while torch uses more.

    ATen's ``parallel_for`` is inline OpenMP code: an extension compiled without
    ``-fopenmp`` (macOS, or a compiler without OpenMP) runs every parallel loop on the
    calling thread, which ``parallel_threads`` reports.
    """
    threads = torch.get_num_threads()
    if threads > 1 and _parallel_threads(threads) == 1:
        warnings.warn(
            f'mmsfr._ext was built without OpenMP, so its C++ kernels run on one thread '
            f'while torch uses {threads}; set MMSFR_NATIVE=0 to run deploy CondenseNetV2 '
            'models with PyTorch ops on all threads instead (setup.py builds the kernels '
            'with OpenMP where torch runs on it, on Linux)')


_AVAILABLE, STATUS, _KERNELS = _load()


class _Switch(threading.local):
    """Whether the operators are on, per thread; a new thread starts from the class
    attribute, the process default (``MMSFR_NATIVE``)."""

    enabled: bool = os.environ.get('MMSFR_NATIVE', '1') != '0'


_switch = _Switch()


def native_available() -> bool:
    """Whether ``mmsfr._ext`` is built and loads (``STATUS`` says why not)."""
    return _AVAILABLE


def native_enabled() -> bool:
    """Whether deploy models use the C++ operators now, in this thread: available and
    switched on."""
    return _AVAILABLE and _switch.enabled


@contextlib.contextmanager
def native_kernels(enabled: bool) -> Iterator[None]:
    """Switch the C++ operators on or off inside a ``with`` block (e.g. to compare).

    The switch is thread-local, like ``torch.no_grad``: other threads keep their own
    setting.

    Args:
        enabled: Use the operators (if built) inside the block.

    Example:
        >>> with native_kernels(False):
        ...     native_enabled()
        False
    """
    previous, _switch.enabled = _switch.enabled, bool(enabled)
    try:
        yield
    finally:
        _switch.enabled = previous
