"""Let ``torch.load(weights_only=True)`` read mmengine's own checkpoints, and nothing more.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch 2.6 that
means ``weights_only=True``, which refuses every global outside torch's allow-list.
Besides tensors, an mmengine checkpoint pickles the message hub's ``HistoryBuffer``
objects: numpy arrays and dtypes, and the buffer's statistics methods, which protocol 2
stores as ``getattr(HistoryBuffer, 'mean')``; an empty array's data is ``bytes()``.

Allow-listing ``builtins.getattr`` or ``HistoryBuffer`` itself would let a crafted file
reach any object (``getattr(getattr, '__self__')`` is the builtins module) and give
attacker-chosen attributes to a class whose ``__setstate__`` takes any state. So each
pickled name is bound (``add_safe_globals`` with ``(object, 'module.qualname')``) to a
restricted stand-in instead:

* ``mmengine.logging.history_buffer.HistoryBuffer`` -> :class:`HistoryBufferState`:
  accepts only HistoryBuffer's own fields (``max_length``: int; ``_log_history`` and
  ``_count_history``: 1-d numeric numpy arrays; ``statistics_methods``: HistoryBuffer's
  own ``min``/``max``/``current``/``mean``) and becomes a genuine ``HistoryBuffer``;
* ``builtins.getattr`` -> :func:`history_buffer_statistic`: resolves only those four
  method names on ``HistoryBuffer``;
* ``builtins.bytes`` -> :func:`empty_bytes`: ``bytes()`` with no argument only;
* numpy's array and scalar reconstruction (under its numpy 1.x and 2.x module names)
  and the classes of the numeric dtypes (bool, int, uint, float), which numpy >= 1.25
  needs to rebuild a dtype; none of them reaches other objects.

``weights_only`` stays on: the unpickler still refuses every other global.
"""
from __future__ import annotations

import _compat_pickle
import argparse
import importlib
import builtins  # noqa: F401  (used by the examples)
import pickle
import types
from pickle import UnpicklingError

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from .compat import needs_weights_only_allow_list

#: The statistics methods HistoryBuffer registers itself (what its checkpoints pickle).
STATISTICS = ('min', 'max', 'current', 'mean')
#: numpy dtype classes an allowed array or scalar may have (numpy >= 1.25 pickles a
#: dtype's class through BUILD).
_NUMPY_DTYPE_NAMES = ('BoolDType', 'Int8DType', 'Int16DType', 'Int32DType', 'Int64DType',
                      'UInt8DType', 'UInt16DType', 'UInt32DType', 'UInt64DType',
                      'Float16DType', 'Float32DType', 'Float64DType', 'LongDType',
                      'ULongDType', 'LongLongDType', 'ULongLongDType', 'ByteDType',
                      'UByteDType', 'ShortDType', 'UShortDType', 'IntDType', 'UIntDType')
_NUMERIC_KINDS = 'biuf'
_HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'


def _refuse(message: str) -> UnpicklingError:
    return UnpicklingError(f'mmsfr safe loading: {message}')


def _is_numeric_array(value) -> bool:
    return type(value) is np.ndarray and value.ndim == 1 and value.dtype.kind in _NUMERIC_KINDS


class HistoryBufferState(HistoryBuffer):
    """What the pickled name of ``HistoryBuffer`` resolves to in a weights-only load.

    The unpickler creates it without arguments (``NEWOBJ``) and hands it its state
    (``BUILD``); :meth:`__setstate__` checks every field and then turns the object into
    a genuine ``HistoryBuffer``. Calling it with arguments, or a state with any other
    field or type, raises ``UnpicklingError``.

    Example:
        >>> buf = HistoryBuffer([1.0, 2.0], [1, 1])
        >>> state = dict(buf.__getstate__())
        >>> rebuilt = HistoryBufferState.__new__(HistoryBufferState)
        >>> rebuilt.__setstate__(state)
        >>> type(rebuilt).__name__, float(rebuilt.mean())
        ('HistoryBuffer', 1.5)
        >>> HistoryBufferState.__new__(HistoryBufferState).__setstate__(
        ...     dict(state, nn=1))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        _pickle.UnpicklingError: mmsfr safe loading: a HistoryBuffer state with field(s) ['nn'] ...
    """

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise _refuse('HistoryBuffer is only rebuilt from its saved state')
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        raise _refuse('HistoryBuffer is only rebuilt from its saved state, not called')

    def __setstate__(self, state) -> None:
        if type(state) is not dict:
            raise _refuse(f'a HistoryBuffer state must be a dict, got {type(state).__name__}')
        known = {'max_length', '_log_history', '_count_history', 'statistics_methods'}
        extra = sorted(map(str, set(state) - known))
        if extra:
            raise _refuse(f'a HistoryBuffer state with field(s) {extra} is refused; it '
                          f'has only {sorted(known)}')
        max_length = state.get('max_length', 1000000)
        if type(max_length) is not int:
            raise _refuse('HistoryBuffer.max_length must be an int')
        arrays = {}
        for name in ('_log_history', '_count_history'):
            value = state.get(name, np.array([]))
            if not _is_numeric_array(value):
                raise _refuse(f'HistoryBuffer.{name} must be a 1-d numeric numpy array')
            arrays[name] = value
        methods = state.get('statistics_methods', {})
        if type(methods) is not dict or any(
                name not in STATISTICS or method is not getattr(HistoryBuffer, name)
                for name, method in methods.items()):
            raise _refuse("HistoryBuffer.statistics_methods may only hold HistoryBuffer's "
                          f'own {list(STATISTICS)}')
        self.__class__ = HistoryBuffer  # same layout: now a genuine HistoryBuffer
        self.max_length = max_length
        self.__dict__.update(arrays)
        self._set_default_statistics()


def history_buffer_statistic(owner, name):
    """``getattr`` restricted to ``HistoryBuffer``'s own statistics methods.

    Example:
        >>> history_buffer_statistic(HistoryBuffer, 'mean') is HistoryBuffer.mean
        True
        >>> history_buffer_statistic(getattr, '__self__')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        _pickle.UnpicklingError: mmsfr safe loading: getattr(getattr, '__self__') is refused; ...
    """
    if owner in (HistoryBuffer, HistoryBufferState) and name in STATISTICS:
        return getattr(HistoryBuffer, name)
    shown = 'getattr' if owner is history_buffer_statistic else getattr(
        owner, '__qualname__', type(owner).__qualname__)
    raise _refuse(f'getattr({shown:.60}, {str(name)!r:.40}) is refused; only the '
                  f'HistoryBuffer statistics {list(STATISTICS)} can be looked up')


def empty_bytes(*args):
    """``bytes()`` (how protocol 2 pickles ``b''``, e.g. an empty array's data); no args.

    Example:
        >>> empty_bytes()
        b''
    """
    if args:
        raise _refuse('bytes(...) with arguments is refused; only bytes() is allowed')
    return b''


def _is_plain(value, depth: int = 0) -> bool:
    """None, bool, int, float, str, bytes, or lists/tuples/str-keyed dicts of them."""
    if value is None or type(value) in (bool, int, float, str, bytes):
        return True
    if depth >= 8:
        return False
    if type(value) in (list, tuple):
        return all(_is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False


class NamespaceState(argparse.Namespace):
    """What ``argparse.Namespace`` resolves to when reading a released checkpoint.

    The authors' training scripts pickle their command-line ``args``; only plain values
    (numbers, strings, None and lists / tuples / dicts of them) are accepted, and the
    result is a genuine ``argparse.Namespace``.

    Example:
        >>> ns = NamespaceState.__new__(NamespaceState)
        >>> ns.__setstate__({'stages': [1, 2], 'dataset': 'imagenet'})
        >>> ns
        Namespace(stages=[1, 2], dataset='imagenet')
    """

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise _refuse('argparse.Namespace is only rebuilt from its saved state')
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        raise _refuse('argparse.Namespace is only rebuilt from its saved state, not called')

    def __setstate__(self, state) -> None:
        if type(state) is not dict or not _is_plain(state):
            raise _refuse('an argparse.Namespace may only hold plain values (numbers, '
                          'strings, None and lists/dicts of them)')
        self.__class__ = argparse.Namespace
        self.__dict__.update(state)


def released_checkpoint_globals() -> list:
    """Extra entries for the authors' released checkpoints (their pickled ``args``)."""
    return [(NamespaceState, 'argparse.Namespace')]


def _numpy_globals() -> list:
    """numpy's array/scalar reconstruction and numeric dtypes, under every name pickled."""
    # numpy 2 moved numpy.core to numpy._core (1.26 has a partial numpy._core)
    multiarray = importlib.import_module(
        'numpy._core.multiarray' if int(np.__version__.split('.')[0]) >= 2
        else 'numpy.core.multiarray')
    found: list = [np.ndarray, np.dtype]
    for name in ('_reconstruct', 'scalar'):
        func = getattr(multiarray, name)
        found += [(func, f'numpy.core.multiarray.{name}'),
                  (func, f'numpy._core.multiarray.{name}')]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:  # numpy >= 1.25 pickles dtypes by their class
        found += sorted({getattr(dtypes, name) for name in _NUMPY_DTYPE_NAMES
                         if hasattr(dtypes, name)}, key=lambda t: t.__name__)
    return found


def mmengine_checkpoint_globals() -> list:
    """The allow-list entries (objects or ``(object, 'module.qualname')`` pairs).

    Example:
        >>> entries = mmengine_checkpoint_globals()
        >>> (HistoryBufferState, 'mmengine.logging.history_buffer.HistoryBuffer') in entries
        True
        >>> HistoryBuffer in entries or builtins.getattr in entries
        False
    """
    return [(HistoryBufferState, _HISTORY_BUFFER),
            (history_buffer_statistic, 'builtins.getattr'),
            (empty_bytes, 'builtins.bytes')] + _numpy_globals()


def allow_list_needed() -> bool:
    """Whether this torch needs (and supports) the allow-list.

    torch >= 2.6 loads with ``weights_only=True`` by default (mmengine passes nothing)
    and accepts the ``(object, 'module.qualname')`` entries; older torch unpickles
    fully by default, so nothing is installed there.
    """
    return needs_weights_only_allow_list() and hasattr(torch.serialization,
                                                       'add_safe_globals')


def allow_mmengine_checkpoints() -> bool:
    """Allow-list :func:`mmengine_checkpoint_globals` for ``torch.load`` where needed.

    Returns:
        Whether the allow-list was installed (see :func:`allow_list_needed`).

    Example:
        >>> allow_mmengine_checkpoints()  # done by ``import mmsfr``
        True
    """
    if not allow_list_needed():
        return False
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    return True


def latin1_bytes(text, encoding='latin1'):
    """``_codecs.encode`` as protocol 2 uses it for bytes: a str to latin-1 bytes only."""
    if type(text) is not str or encoding not in ('latin1', 'latin-1'):
        raise _refuse(f'_codecs.encode only turns text into latin-1 bytes, got '
                      f'{type(text).__name__} / {encoding!r}')
    return text.encode('latin1')


def _qualified(entry) -> tuple[str, object]:
    if isinstance(entry, tuple):
        obj, name = entry
        return name, obj
    return f'{entry.__module__}.{entry.__qualname__}', entry


def restricted_pickle_module(extra: list | None = None) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` that resolves only allow-listed globals.

    For torch releases before 2.6, whose weights-only unpickler takes no extra globals
    in the ``(object, 'module.qualname')`` form (before 2.4 none at all): the
    unpickler's ``find_class`` resolves exactly torch's own weights-only allow-list plus
    the stand-ins of :func:`mmengine_checkpoint_globals` and
    :func:`released_checkpoint_globals` (and ``extra``), and refuses every other global,
    so only those callables can be called while loading. Use it as
    ``torch.load(f, weights_only=False, pickle_module=restricted_pickle_module())``.

    Example:
        >>> import io
        >>> buf = io.BytesIO()
        >>> torch.save({'w': torch.ones(2), 'args': argparse.Namespace(lr=0.1)}, buf)
        >>> _ = buf.seek(0)
        >>> torch.load(buf, weights_only=False, pickle_module=restricted_pickle_module())['args']
        Namespace(lr=0.1)
    """
    import torch._weights_only_unpickler as weights_only

    allowed = dict(weights_only._get_allowed_globals())
    # protocol 2 pickles bytes (e.g. a numpy array's data) as _codecs.encode(text, 'latin1')
    allowed.setdefault('_codecs.encode', latin1_bytes)
    for entry in (mmengine_checkpoint_globals() + released_checkpoint_globals()
                  + list(extra or [])):
        name, obj = _qualified(entry)
        allowed[name] = obj

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            # protocol 2 writes Python 2 names (``__builtin__.getattr``): map them
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            found = allowed.get(f'{module}.{name}')
            if found is None:
                raise _refuse(f'unsupported global {module}.{name}')
            return found

    def load(file, **kwargs):
        return Unpickler(file, **kwargs).load()

    module = types.ModuleType('mmsfr_restricted_pickle')
    module.Unpickler, module.load = Unpickler, load
    return module
