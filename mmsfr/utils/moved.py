"""Old import addresses of names that moved to another module (one implementation).

A module whose names moved keeps them importable from the old address through a
module-level ``__getattr__`` made here: the name is imported from its new module on
first use, with a ``DeprecationWarning`` naming the new address.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable

__all__ = ['moved_names']


def moved_names(module: str, moves: dict[str, str],
                warn: bool = True) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving names that moved out of ``module``.

    Args:
        module: The old module's name (``__name__``).
        moves: Old name -> ``'new.module:new_name'`` (or ``'new.module'`` for the
            same name there).
        warn: Warn ``DeprecationWarning`` on each use of an old address.

    Example:
        >>> __getattr__ = moved_names('old.place', {'sqrt': 'math'})
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter('always')
        ...     __getattr__('sqrt')(4.0), str(seen[0].message)
        (2.0, 'old.place.sqrt moved to math.sqrt; import it from there')
    """
    def __getattr__(name: str) -> Any:
        if name not in moves:
            raise AttributeError(f'module {module!r} has no attribute {name!r}')
        target, _, new_name = moves[name].partition(':')
        new_name = new_name or name
        if warn:
            warnings.warn(f'{module}.{name} moved to {target}.{new_name}; import it from there',
                          DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(target), new_name)

    return __getattr__
