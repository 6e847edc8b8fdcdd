"""Checkpoint files: weights-only reading, output checks and atomic writing.

Every tool and :mod:`mmsfr.apis` read and write checkpoint files through this module:

* :func:`read_checkpoint` loads with ``weights_only=True`` (never off) and turns every
  failure into one :class:`CheckpointError` naming the file, what it holds (empty, a
  text file, a truncated archive, a refused global) and what to do;
* :func:`find_state_dict` and :func:`strip_module_prefix` get the weights out of it,
  :func:`read_state_dict` does all three (and, asked to, reads a URL downloaded by
  :func:`download_checkpoint` the same way);
* :func:`load_weights` loads them strictly, with one error naming what does not fit;
* :func:`check_output` refuses an output that is one of the inputs (resolved paths,
  links followed) or that cannot be written, before any work is done;
* :func:`atomic_output` / :func:`atomic_save` write to a temporary file in the output's
  directory and rename it onto the output: the output is complete or untouched. The
  file gets the mode ``torch.save`` would give it (``0666`` minus the umask, or the mode
  of the file it replaces), and the temporary file is removed on any failure and when
  SIGTERM, SIGINT or SIGHUP arrives during the save.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import tempfile
import threading
import zipfile
from pathlib import Path
from pickle import UnpicklingError
from typing import Any, Iterator, Mapping, Union

import torch

from .utils.cli import UserError
from .utils.safe_checkpoint import (allow_list_needed, released_checkpoint_globals,
                                    restricted_pickle_module)

PathLike = Union[str, os.PathLike]


class CheckpointError(UserError, ValueError):
    """A checkpoint file cannot be read; the message names it and what to do."""


class OutputError(UserError, ValueError):
    """An output path is one of the inputs or cannot be written (so it was not)."""

    names_output = True


# ------------------------------------------------------------------------ reading
def _describe(path: Path) -> str:
    """What a file that is not a readable torch checkpoint holds, in words."""
    size = path.stat().st_size
    with open(path, 'rb') as f:
        head = f.read(256)
    if head.startswith(b'PK\x03\x04'):
        if not zipfile.is_zipfile(path):
            return f'is a truncated or damaged zip archive ({size} bytes)'
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith('data.pkl') for n in archive.namelist()):
                return 'is a zip archive without the data.pkl of a torch checkpoint'
        return f'is a damaged torch zip archive ({size} bytes)'
    if head.startswith(b'\x80'):
        return f'is a truncated or damaged pickle ({size} bytes)'
    if head.startswith(b'\x93NUMPY'):
        return 'is a numpy .npy file'
    if head.startswith(b'\x89HDF'):
        return 'is an HDF5 file'
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in '\r\n\t' for c in text):
        start = ' '.join(text.split())[:40]
        return f"is a text file ({size} bytes, starting {start!r})"
    return f'is not a torch checkpoint ({size} bytes, starting {head[:8]!r})'


def _refusal(err: BaseException) -> str | None:
    """What a weights-only load refused, or None if ``err`` is no such refusal."""
    text = str(err)
    if 'Weights only load failed' not in text and 'mmsfr safe loading' not in text:
        return None
    found = re.search(r'GLOBAL (\S+) was not an allowed global', text)
    if found:
        return f'the global {found[1]}'
    found = re.search(r'mmsfr safe loading: ([^\n]+)', text)
    if found:
        return found[1].strip()
    found = re.search(r'WeightsUnpickler error:\s*([^\n]+)', text)
    return found[1].strip()[:160] if found else 'objects that are not plain weights'


def check_checkpoint_file(path: PathLike, what: str = 'checkpoint') -> None:
    """File-level checks of a checkpoint, without unpickling anything.

    Raises:
        CheckpointError: the file is missing, a directory, empty, or (for a zip
            archive, the format ``torch.save`` writes) truncated or damaged.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f'{what} not found: {path} (check the path)')
    if path.is_dir():
        raise CheckpointError(f'{what} {path} is a directory; give the checkpoint file')
    if path.stat().st_size == 0:
        raise CheckpointError(f'{what} {path} is empty (0 bytes); an interrupted save or '
                              'copy leaves such files: copy or save it again')
    with open(path, 'rb') as f:
        head = f.read(4)
    if head.startswith(b'PK') and not zipfile.is_zipfile(path) or not head.startswith(
            (b'PK', b'\x80')):
        raise CheckpointError(f'{what} {path}: cannot read it as a torch checkpoint, it '
                              f'{_describe(path)}; copy or save it again (or give the right '
                              'file)')


def read_checkpoint(path: PathLike, *, what: str = 'checkpoint',
                    map_location: Any = 'cpu') -> Any:
    """Load a checkpoint file with ``weights_only=True``.

    Besides torch's own allow-list, mmengine's training state
    (:mod:`mmsfr.utils.safe_checkpoint`) and the plain ``args`` of the authors'
    released files are accepted.

    Args:
        path: The file.
        what: How to call it in messages (``'checkpoint'``, ``'--resume checkpoint'``).
        map_location: As for ``torch.load``.

    Raises:
        CheckpointError: naming the file and what is wrong with it (missing, a
            directory, empty, a text file, truncated, or holding refused globals).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = Path(tmp) / 'notes.pth'
        ...     _ = path.write_text('hello')
        ...     read_checkpoint(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmsfr.checkpoint.CheckpointError: checkpoint .../notes.pth: cannot read it as a torch checkpoint, it is a text file (5 bytes, starting 'hello'); ...
    """
    path = Path(path)
    check_checkpoint_file(path, what)
    try:
        if allow_list_needed():
            with torch.serialization.safe_globals(released_checkpoint_globals()):
                return torch.load(str(path), map_location=map_location, weights_only=True)
        # torch < 2.6: the same allow-list, applied by the unpickler's find_class
        return torch.load(str(path), map_location=map_location, weights_only=False,
                          pickle_module=restricted_pickle_module())
    except Exception as err:  # noqa: BLE001  (unpickling fails in many types)
        refused = _refusal(err) if isinstance(err, UnpicklingError) else None
        if refused is not None:
            raise CheckpointError(
                f'refusing to load {what} {path}: it pickles objects a weights-only load '
                f'does not accept ({refused}); nothing in it was run. Use files from a source '
                'you trust; a trusted file can be re-saved as a plain state_dict') from err
        raise CheckpointError(
            f'{what} {path}: cannot read it as a torch checkpoint, it {_describe(path)}; '
            'copy or save it again (or give the right file)') from err


def check_loadable(path: PathLike, what: str = 'checkpoint') -> None:
    """Check a checkpoint before mmengine loads it itself (``load_from``, resume).

    The file is read the restricted way (:func:`read_checkpoint`), so a refused global
    or a damaged file is reported in one line before anything starts. With torch >= 2.6
    mmengine's own load is weights-only too; before 2.6 it unpickles fully, and this
    read is what keeps a crafted file from reaching it.
    """
    read_checkpoint(path, what=what)


def find_state_dict(checkpoint: Any, path: PathLike = 'checkpoint',
                    keys: tuple[str, ...] = ('state_dict', 'model')) -> tuple[dict, str]:
    """The state_dict in a loaded checkpoint: the first of ``keys``, or the top level.

    Returns:
        ``(state_dict, source)``, source naming the key used (or ``'top level'``).

    Raises:
        CheckpointError: no dict of tensors found.

    Example:
        >>> find_state_dict({'meta': {}, 'state_dict': {'w': torch.zeros(1)}})[1]
        'state_dict'
        >>> find_state_dict({'w': torch.zeros(1)})[1]
        'top level'
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path}: not a checkpoint dict (got '
                              f'{type(checkpoint).__name__}); give a state_dict checkpoint')
    for key in keys:
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key], key
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint, 'top level'
    raise CheckpointError(f'{path}: no state_dict found (keys: {sorted(map(str, checkpoint))[:8]})'
                          f'; expected one of {list(keys)} or a dict of tensors')


def strip_module_prefix(state_dict: Mapping[str, Any], prefix: str = 'module.') -> dict:
    """Drop the ``module.`` of (Distributed)DataParallel from every key that has it.

    Example:
        >>> strip_module_prefix({'module.conv.weight': 1, 'fc.bias': 2})
        {'conv.weight': 1, 'fc.bias': 2}
    """
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def download_checkpoint(url: str, *, what: str = 'checkpoint') -> Path:
    """Download a checkpoint URL once into torch's hub cache and return the file.

    The file goes where ``torch.hub.load_state_dict_from_url`` (and mmengine's
    ``load_from_http``) keep downloads, ``<torch hub dir>/checkpoints/<file name>``, and
    is downloaded only if it is not there yet. Read it with :func:`read_checkpoint`.

    Raises:
        CheckpointError: the URL cannot be downloaded (naming it and why).
    """
    from urllib.error import URLError
    from urllib.parse import urlparse

    name = os.path.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(f'{what} {url}: the URL names no file')
    cached = Path(torch.hub.get_dir()) / 'checkpoints' / name
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(cached), progress=False)
        except (URLError, OSError, ValueError) as err:
            raise CheckpointError(f'cannot download {what} {url}: {err}; check the URL, or '
                                  'download the file and give its path') from err
    return cached


def read_state_dict(path: PathLike, keys: tuple[str, ...] = ('state_dict', 'model'), *,
                    what: str = 'checkpoint', allow_url: bool = False) -> dict:
    """:func:`read_checkpoint` -> :func:`find_state_dict` -> :func:`strip_module_prefix`.

    Args:
        path: The checkpoint file; with ``allow_url``, also an ``http(s)://`` URL
            (:func:`download_checkpoint`, then read weights-only like a file).
        keys: Where to look for the state_dict (:func:`find_state_dict`).
        what: How to call the file in messages.
        allow_url: Accept URLs.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save({'state_dict': {'module.w': torch.zeros(1)}}, f'{tmp}/m.pth')
        ...     list(read_state_dict(f'{tmp}/m.pth'))
        ['w']
    """
    if allow_url and _is_remote(path):
        path = download_checkpoint(str(path), what=what)
    state_dict, _ = find_state_dict(read_checkpoint(path, what=what), path, keys)
    return strip_module_prefix(state_dict)


def _some(keys: list[str], limit: int = 3) -> str:
    more = f', ... ({len(keys)} in all)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, Any], source: PathLike,
                 target: str = 'the model',
                 hint: str = 'give a checkpoint of this model (or the config it was '
                 'trained with)') -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with a one-line error.

    The model's own checks (e.g. a train-time checkpoint for a deploy-form model) raise
    their ``ValueError`` first; otherwise missing, unexpected and differently shaped
    keys are summed up in one :class:`CheckpointError` naming ``source`` and ``target``.

    Example:
        >>> load_weights(torch.nn.Linear(2, 3), {'weight': torch.zeros(3, 2)},
        ...              'lin.pth')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmsfr.checkpoint.CheckpointError: lin.pth does not fit the model: 1 missing keys (bias); ...
    """
    try:
        model.load_state_dict(state_dict, strict=True)
        return
    except RuntimeError:
        pass
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}' for k in own
              if k in state_dict and isinstance(state_dict[k], torch.Tensor)
              and state_dict[k].shape != own[k].shape]
    parts = [f'{len(missing)} missing keys ({_some(missing)})' if missing else '',
             f'{len(unexpected)} unexpected keys ({_some(unexpected)})' if unexpected else '',
             f'{len(shapes)} keys of other shapes ({_some(shapes, 2)})' if shapes else '']
    raise CheckpointError(f'{source} does not fit {target}: '
                          + '; '.join(p for p in parts if p) + f'; {hint}')


# ------------------------------------------------------------------------ writing
def _is_remote(path: Any) -> bool:
    return '://' in str(path)


def check_not_input(out: PathLike, *inputs: PathLike | None) -> None:
    """Raise :class:`OutputError` when ``out`` is one of ``inputs``.

    Paths are compared resolved (symbolic links followed, ``..`` removed), and existing
    files also by identity (hard links). ``None`` and URL inputs are skipped.

    Example:
        >>> check_not_input('a/../b.pth', 'b.pth')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmsfr.checkpoint.OutputError: refusing to overwrite the input file b.pth: ...
    """
    out_path = Path(out)
    target = out_path.resolve()
    for src in inputs:
        if src is None or _is_remote(src):
            continue
        src_path = Path(src)
        same = target == src_path.resolve()
        if not same and out_path.exists() and src_path.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(out_path, src_path)
        if same:
            raise OutputError(f'refusing to overwrite the input file {src}: the output {out} '
                              'is that file; choose another output path')


def _dir_problem(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` (None: they can).

    A missing directory is fine if it can be created: its nearest existing ancestor
    must be a writable directory (checked by creating and removing a file there).
    """
    directory = directory.absolute()
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f'{existing} is a file, not a directory'
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix='.mmsfr-write-test')
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f'the directory {existing} is not writable ({err.strerror or err})'
    return None


def check_writable_dir(directory: PathLike, what: str = 'the directory') -> None:
    """Raise :class:`OutputError` unless files can be created in ``directory``.

    Example:
        >>> check_writable_dir('work_dirs/new_run', 'the work dir')
    """
    problem = _dir_problem(Path(directory))
    if problem:
        raise OutputError(f'cannot write to {what} {directory}: {problem}; '
                          'choose another path')


def check_output(out: PathLike, *inputs: PathLike | None) -> Path:
    """Check before any work that ``out`` can be written and is none of ``inputs``.

    Raises:
        OutputError: ``out`` is an input, a directory, under a file, or in a directory
            that cannot be written.

    Example:
        >>> check_output('work_dirs/new/model.pth', 'model.pth')
        PosixPath('work_dirs/new/model.pth')
    """
    out = Path(out)
    check_not_input(out, *inputs)
    if out.is_dir():
        raise OutputError(f'the output {out} is a directory; give a file path')
    problem = _dir_problem(out.parent)
    if problem:
        raise OutputError(f'cannot write {out}: {problem}; choose another output path')
    return out


def _umask() -> int:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_mode(out: PathLike) -> int:
    """The mode ``open(out, 'w')`` gives: the replaced file's, else ``0666 & ~umask``."""
    try:
        return stat.S_IMODE(os.stat(out).st_mode)
    except OSError:
        return 0o666 & ~_umask()


# Temporary files being written, removed when a terminating signal arrives.
_LIVE: list[Path] = []
_PREVIOUS: dict[int, Any] = {}
_LOCK = threading.Lock()
_SIGNALS = tuple(getattr(signal, name) for name in ('SIGTERM', 'SIGINT', 'SIGHUP')
                 if hasattr(signal, name))


def _remove_live() -> None:
    for path in list(_LIVE):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _restore_handlers() -> None:
    for signum, previous in _PREVIOUS.items():
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, previous)
    _PREVIOUS.clear()


def _on_signal(signum: int, frame) -> None:
    previous = _PREVIOUS.get(signum, signal.SIG_DFL)
    if callable(previous):
        # e.g. SIGINT's KeyboardInterrupt: the raised exception unwinds through the
        # save, whose clean-up removes the temporary file.
        previous(signum, frame)
        return
    _remove_live()
    _restore_handlers()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # terminate as the signal would have


@contextlib.contextmanager
def _removed_on_signal(path: Path) -> Iterator[None]:
    main = threading.current_thread() is threading.main_thread()
    with _LOCK:
        _LIVE.append(path)
        if main and len(_LIVE) == 1:
            for signum in _SIGNALS:
                previous = signal.getsignal(signum)
                if previous in (signal.SIG_IGN, None):
                    continue
                _PREVIOUS[signum] = previous
                signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        with _LOCK:
            _LIVE.remove(path)
            if main and not _LIVE:
                _restore_handlers()


def _new_temp(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f'.{out.name}.', suffix='.tmp')
    except OSError as err:
        raise OutputError(f'cannot write {out}: {err.strerror or err} '
                          f'({err.filename or out.parent}); choose another output path') from err
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def scratch_file(beside: PathLike) -> Iterator[Path]:
    """A temporary file beside ``beside``, always removed (also on SIGTERM/SIGINT)."""
    tmp = _new_temp(Path(beside))
    try:
        with _removed_on_signal(tmp):
            yield tmp
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_output(out: PathLike, *inputs: PathLike | None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``out`` in one rename.

    ``out`` is checked first (:func:`check_output`). On any exception, and on SIGTERM,
    SIGINT or SIGHUP during the block, the temporary file is removed and ``out`` is
    left as it was.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with atomic_output(Path(tmp) / 'x.pth') as part:
        ...         torch.save({'w': torch.zeros(1)}, part)
        ...     sorted(p.name for p in Path(tmp).iterdir())
        ['x.pth']
    """
    out = check_output(out, *inputs)
    with scratch_file(out) as tmp:
        yield tmp
        os.chmod(tmp, output_mode(out))
        try:
            os.replace(tmp, out)
        except OSError as err:
            raise OutputError(f'cannot write {out}: {err.strerror or err}; '
                              'choose another output path') from err


def atomic_save(obj: Any, out: PathLike, *inputs: PathLike | None) -> Path:
    """``torch.save(obj)`` to ``out`` through :func:`atomic_output`.

    Raises:
        OutputError: ``out`` is one of ``inputs`` or cannot be written (nothing written).
    """
    with atomic_output(out, *inputs) as tmp:
        torch.save(obj, tmp)
    return Path(out)
