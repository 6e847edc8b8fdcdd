"""The one wrapper every tool's ``main`` goes through: user errors as one line.

An error the user can fix (a missing or unreadable file, a bad value, an output that
cannot be written) is printed as a single line ``error: ...`` naming the file or value
and what to do, and the tool exits with status 1. ``--debug`` on the command line (every
tool accepts it) or ``MMSFR_DEBUG=1`` in the environment re-raises it with its traceback
instead. Other exceptions are bugs and always keep their traceback.

While a tool runs, setuptools' notice that ``pkg_resources`` is deprecated is silenced
(:func:`quiet_pkg_resources`): mmengine imports (and reloads) ``pkg_resources`` each
time it reads a config with a ``mmdet::`` / ``mmpretrain::`` base, and setuptools < 81
is needed to build mmcv, so the notice would otherwise follow every tool run. Only that
message is filtered, and only for the duration of the tool's ``main``.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import warnings
from typing import Callable, Iterator, Sequence

#: Environment variable that turns on tracebacks for user errors (any value but
#: '', '0', 'false', 'no').
DEBUG_ENV = 'MMSFR_DEBUG'


class UserError(Exception):
    """An error the user can fix; its message names the file or value and what to do."""


#: Exceptions reported as one line: :class:`UserError` (and its subclasses such as
#: :class:`mmsfr.checkpoint.CheckpointError`), the ``ValueError`` the checks raise, and
#: the file errors of paths given on the command line.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, ValueError, FileNotFoundError, FileExistsError, IsADirectoryError,
    NotADirectoryError, PermissionError)


#: Start of setuptools' deprecation notice for ``pkg_resources`` (a regular expression
#: matched at the start of the warning's message); nothing else is filtered.
PKG_RESOURCES_WARNING = r'pkg_resources is deprecated as an API'


@contextlib.contextmanager
def quiet_pkg_resources() -> Iterator[None]:
    """Silence setuptools' ``pkg_resources is deprecated`` warning inside the block.

    The filter matches that message only (as a ``UserWarning``, setuptools >= 80, or a
    ``DeprecationWarning``, older setuptools); every other warning is shown as before.
    On leaving the block exactly the filters added here are removed: unlike
    ``warnings.catch_warnings()``, filters that modules imported inside the block
    install (torch and numpy add some) stay in place.

    Example:
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter('always')
        ...     with quiet_pkg_resources():
        ...         warnings.warn('pkg_resources is deprecated as an API. See ...')
        ...         warnings.warn('another warning')
        >>> [str(w.message) for w in seen]
        ['another warning']
    """
    added = []
    for category in (UserWarning, DeprecationWarning):
        warnings.filterwarnings('ignore', message=PKG_RESOURCES_WARNING, category=category)
        added.append(warnings.filters[0])
    try:
        yield
    finally:
        for entry in added:
            with contextlib.suppress(ValueError):  # already gone with a restored list
                warnings.filters.remove(entry)


def add_debug_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` (show the traceback of user errors) to a tool's parser."""
    parser.add_argument('--debug', action='store_true',
                        help=f'show the traceback of errors (also: {DEBUG_ENV}=1)')


def debug_enabled(argv: Sequence[str] = ()) -> bool:
    """``--debug`` in ``argv`` (before a ``--``) or ``MMSFR_DEBUG`` set.

    Example:
        >>> debug_enabled(['cfg.py', '--debug'])
        True
        >>> debug_enabled(['cfg.py', '--', '--debug']) == bool(os.environ.get('MMSFR_DEBUG'))
        True
    """
    args = list(argv)
    if '--' in args:
        args = args[:args.index('--')]
    env = os.environ.get(DEBUG_ENV, '').strip().lower()
    return '--debug' in args or env not in ('', '0', 'false', 'no')


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (file errors: ``path: reason``).

    Example:
        >>> one_line(FileNotFoundError(2, 'No such file or directory', 'a.py'))
        'a.py: No such file or directory'
        >>> one_line(ValueError('first\\n  second'))
        'first second'
    """
    if isinstance(err, OSError) and err.filename is not None:
        text = f'{err.filename}: {err.strerror or err}'
        if err.filename2 is not None:
            text += f' ({err.filename2})'
    else:
        text = str(err) if str(err) else type(err).__name__
        if isinstance(err, KeyError) and err.args:
            text = str(err.args[0])
    return ' '.join(text.split())


@contextlib.contextmanager
def not_written(out) -> Iterator[None]:
    """Add ``; OUT was not written`` to the user errors raised inside.

    Example:
        >>> with not_written('x.pth'):  # doctest: +ELLIPSIS
        ...     raise ValueError('bad mask')
        Traceback (most recent call last):
        ...
        mmsfr.utils.cli.UserError: bad mask; x.pth was not written
    """
    try:
        yield
    except USER_ERRORS as err:
        if getattr(err, 'names_output', False):  # already says the output is not written
            raise
        raise UserError(f'{one_line(err)}; {out} was not written') from err


def tool_main(func: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a tool's ``main(argv=None) -> int``; see the module docstring.

    ``main`` runs inside :func:`quiet_pkg_resources`.

    Example:
        >>> @tool_main
        ... def main(argv=None):
        ...     raise FileNotFoundError(2, 'No such file or directory', 'cfg.py')
        >>> main([])  # prints "error: cfg.py: No such file or directory" to stderr
        1
    """

    @functools.wraps(func)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            with quiet_pkg_resources():
                code = func(args)
        except USER_ERRORS as err:
            if debug_enabled(args):
                raise
            print(f'error: {one_line(err)}', file=sys.stderr, flush=True)
            return 1
        return 0 if code is None else code

    return wrapper
