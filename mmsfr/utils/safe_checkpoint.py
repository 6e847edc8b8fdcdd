"""Let ``torch.load(weights_only=True)`` read mmengine's own checkpoints.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch 2.6 that
means ``weights_only=True``, which refuses every global outside torch's allow-list.
mmengine checkpoints store, besides tensors, the message hub's ``HistoryBuffer``
objects (numpy arrays, numpy dtypes, and the buffer's statistics methods, pickled as
``getattr(HistoryBuffer, name)``). This module allow-lists exactly those globals.

``weights_only`` stays on: the unpickler still refuses any other global, and it only
*calls* allow-listed callables, so a pickled ``os.system`` (or any function reached
through ``getattr``) is never executed.
"""
from __future__ import annotations

import builtins

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

#: numpy dtypes a HistoryBuffer may hold (logged scalars are floats or ints).
_NUMPY_DTYPE_NAMES = ('Float64DType', 'Float32DType', 'Float16DType', 'Int64DType',
                      'Int32DType', 'Int16DType', 'Int8DType', 'UInt8DType', 'BoolDType')


def mmengine_checkpoint_globals() -> list:
    """Return the globals that mmengine's checkpoints pickle besides tensors."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    found = [HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray,
             np.dtype, builtins.getattr]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:  # numpy >= 1.25 pickles dtypes by their class
        found += [getattr(dtypes, name) for name in _NUMPY_DTYPE_NAMES
                  if hasattr(dtypes, name)]
    return found


def allow_mmengine_checkpoints() -> None:
    """Allow-list :func:`mmengine_checkpoint_globals` for ``torch.load``.

    Example:
        >>> allow_mmengine_checkpoints()  # done by ``import mmsfr``
        >>> torch.load('work_dirs/x/epoch_1.pth')  # doctest: +SKIP
    """
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
