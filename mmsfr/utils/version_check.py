"""Import-time guard on the versions of the OpenMMLab stack."""
from __future__ import annotations

import importlib

from packaging.version import Version

from mmsfr.version import REQUIRED_VERSIONS


def installed_version(package: str) -> str | None:
    """Return ``package.__version__`` or None when the package is not importable."""
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    return getattr(module, '__version__', None)


def check_versions(installed: dict[str, str | None] | None = None) -> None:
    """Raise one ``ImportError`` listing every package outside its supported range.

    Args:
        installed: ``{package: version}`` to check; read from the environment
            when omitted.

    Example:
        >>> check_versions({'mmcv': '2.2.0', 'torch': '2.14.1', 'mmengine': '0.10.7',
        ...                 'mmdet': '3.3.0', 'mmpretrain': '1.2.0'})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ImportError: mmsfr needs ... mmcv 2.2.0 (need >=2.0.0, <2.2.0). Required: ...
    """
    if installed is None:
        installed = {name: installed_version(name) for name in REQUIRED_VERSIONS}
    problems = []
    for name, (low, high) in REQUIRED_VERSIONS.items():
        version = installed.get(name)
        if version is None:
            problems.append(f'{name} is not installed (need >={low}, <{high})')
            continue
        release = Version(Version(version).base_version)
        if not Version(low) <= release < Version(high):
            problems.append(f'{name} {version} (need >={low}, <{high})')
    if problems:
        required = ', '.join(f'{n}>={lo},<{hi}' for n, (lo, hi) in REQUIRED_VERSIONS.items())
        raise ImportError(
            'mmsfr needs a supported OpenMMLab stack; found: ' + '; '.join(problems) +
            f'. Required: {required}. Run `make setup` (or see README "Manual set-up").')
