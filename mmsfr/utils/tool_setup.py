"""Argument and config handling shared by the tools (train, test, convert_to_deploy,
get_flops, benchmark, export_onnx) and :func:`mmsfr.apis.init_model`.

Configs ship with the package the OpenMMLab (mim) way, under ``mmsfr/.mim/configs``
(``setup.py`` links it to the checkout's ``configs/`` in an editable install and copies
it into wheels and sdists). :func:`find_config` resolves a config argument: a file path
as given (relative to the current directory), else a path relative to the shipped
configs (with or without a leading ``configs/``), else the name of a shipped config
(its file name without ``.py``, :func:`list_configs`).
"""
from __future__ import annotations

import argparse
import difflib
import fnmatch
import glob
import os
import os.path as osp
from pathlib import Path
from typing import Callable

from mmengine.config import Config, DictAction

from .cli import UserError, add_debug_arg, one_line
from .dist import init_cpu_dist

__all__ = ['ConfigNotFoundError', 'add_debug_arg', 'add_launch_args', 'add_shape_arg',
           'check_input_size', 'config_root', 'find_config', 'list_configs',
           'load_tool_config', 'parse_launch_args', 'parse_shape', 'prepare_launcher',
           'read_config']

#: The package directory (``mmsfr/``).
_PACKAGE = Path(__file__).resolve().parents[1]


class ConfigNotFoundError(UserError, FileNotFoundError):
    """A config argument is neither a file nor a config shipped with mmsfr."""


def config_root() -> Path:
    """The folder of the configs shipped with mmsfr.

    ``mmsfr/.mim/configs`` as installed (a link to the checkout's ``configs/`` in an
    editable install, a copy in a wheel); in a source tree without it, or where it is a
    copy that a wheel build left in the tree, the checkout's ``configs/`` (the
    original).

    Raises:
        ConfigNotFoundError: neither exists (a broken installation).

    Example:
        >>> (config_root() / 'pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py').is_file()
        True
    """
    shipped = _PACKAGE / '.mim' / 'configs'
    checkout = _PACKAGE.parent / 'configs'
    in_tree = (_PACKAGE.parent / 'setup.py').is_file() and checkout.is_dir()
    if shipped.is_dir() and (shipped.is_symlink() or not in_tree):
        return shipped
    if in_tree:
        return checkout
    raise ConfigNotFoundError(f'the configs shipped with mmsfr are missing ({shipped}); '
                              'reinstall mmsfr')


def _is_model_config(rel: Path) -> bool:
    return rel.suffix == '.py' and '_base_' not in rel.parts


def list_configs(pattern: str | None = None) -> list[str]:
    """Names of the configs shipped with mmsfr (file names without ``.py``; ``_base_``
    fragments excluded), sorted.

    Args:
        pattern: Keep only names matching this wildcard pattern (``fnmatch``).

    Example:
        >>> list_configs('condensenetv2-a_*')
        ['condensenetv2-a_8xb128_in1k', 'condensenetv2-a_deploy_in1k']
    """
    root = config_root()
    names = sorted(p.stem for p in root.rglob('*.py')
                   if _is_model_config(p.relative_to(root)))
    return names if pattern is None else fnmatch.filter(names, pattern)


def _by_name(name: str) -> list[Path]:
    root = config_root()
    return sorted(p for p in root.rglob(f'{glob.escape(name)}.py')
                  if _is_model_config(p.relative_to(root)))


def _config_hint(path: str) -> str:
    folder = osp.dirname(path) or '.'
    names: list[str] = []
    if osp.isdir(folder):
        names = [n for n in os.listdir(folder) if n.endswith('.py')]
    elif not osp.isabs(path):  # a folder of the shipped configs, named as in the checkout
        rel = Path(folder)
        if rel.parts[:1] == ('configs', ):
            rel = Path(*rel.parts[1:])
        shipped = config_root() / rel
        if shipped.is_dir():
            names = [p.name for p in shipped.glob('*.py')]
    if not names and not osp.isdir(folder):
        return f'the folder {folder} does not exist either'
    close = difflib.get_close_matches(osp.basename(path), names, n=1)
    if close:
        return f'did you mean {osp.join(osp.dirname(path), close[0])}?'
    return 'check the path (the configs are under configs/)'


def _package_config(text: str) -> Path:
    """``'package::path'``: a config shipped with an OpenMMLab package (mmengine's
    notation, e.g. ``'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'``)."""
    package, rel = text.split('::', 1)
    if package == 'mmsfr':
        path = config_root() / rel
    else:
        from mmengine.utils import get_installed_path, is_installed
        if not is_installed(package):
            raise ConfigNotFoundError(f'config {text} not found: {package} is not installed')
        path = Path(get_installed_path(package)) / '.mim' / 'configs' / rel
    if not path.is_file():
        raise ConfigNotFoundError(f'config {text} not found in the configs {package} ships '
                                  f'({path.parent} has no {path.name})')
    return path


def find_config(config: str | os.PathLike) -> Path:
    """The config file a config argument names.

    In order: the path as given (relative to the current directory); the path relative
    to the shipped configs (:func:`config_root`), a leading ``configs/`` dropped and
    ``.py`` added if missing; the name of a shipped config (:func:`list_configs`).
    ``'package::path'`` names a config another OpenMMLab package ships (as in a
    ``_base_``), e.g. ``'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'``.

    Raises:
        ConfigNotFoundError: naming the argument and, for a path, the closest config
            in its folder, for a name, the closest names and every valid one.

    Example:
        >>> find_config('condensenetv2-a_deploy_in1k').relative_to(config_root())
        PosixPath('pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py')
        >>> find_config('configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py').name
        'condensenetv2-a_deploy_in1k.py'
        >>> find_config('condensenetv2-z_deploy_in1k')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmsfr.utils.tool_setup.ConfigNotFoundError: config 'condensenetv2-z_deploy_in1k' not found: ...
    """
    text = os.fspath(config)
    if '::' in text:
        return _package_config(text)
    path = Path(text)
    if path.is_file():
        return path
    if not path.is_absolute() and text:
        rel = Path(*path.parts[1:]) if path.parts[:1] == ('configs', ) else path
        root = config_root()
        for candidate in (root / rel, root / f'{rel}.py'):
            if candidate.is_file():
                return candidate
        if len(path.parts) == 1:  # a name
            name = path.stem if path.suffix == '.py' else text
            found = _by_name(name)
            if len(found) == 1:
                return found[0]
            if len(found) > 1:  # pragma: no cover - names are unique in mmsfr
                raise ConfigNotFoundError(f'config name {name!r} is ambiguous: '
                                          + ', '.join(map(str, found)))
            if path.suffix != '.py':
                names = list_configs()
                close = difflib.get_close_matches(name, names, n=3)
                hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ''
                raise ConfigNotFoundError(
                    f'config {text!r} not found: it is neither a file nor the name of a '
                    f'config shipped with mmsfr; {hint}valid names: {", ".join(names)}')
    raise ConfigNotFoundError(f'config {text} not found; {_config_hint(text)}')


def read_config(path: str | os.PathLike, cfg_options: dict | None = None) -> Config:
    """Read a config (see :func:`find_config`) and apply ``--cfg-options``; one clear
    error if it cannot be.

    Raises:
        UserError: the file is missing (:class:`ConfigNotFoundError`, with the closest
            name in its folder), is not valid Python, or names a missing ``_base_`` file.

    Example:
        >>> read_config('configs/retinanet_condensenetv2_cc.py')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmsfr.utils.tool_setup.ConfigNotFoundError: config configs/retinanet_condensenetv2_cc.py not found; did you mean configs/retinanet_condensenetv2_c.py?
        >>> read_config('retinanet_condensenetv2_a').model.backbone.type
        'CondenseNetV2'
    """
    found = str(find_config(path))
    try:
        cfg = Config.fromfile(found)
    except SyntaxError as err:
        where = f' ({err.filename}, line {err.lineno})' if err.lineno else ''
        raise UserError(f'config {path} is not valid Python: {err.msg}{where}') from err
    except (FileNotFoundError, ImportError, KeyError) as err:
        raise UserError(f'config {path} cannot be read: {one_line(err)}') from err
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def add_launch_args(parser: argparse.ArgumentParser) -> None:
    """Add mmdet's ``--cfg-options``, ``--launcher`` and ``--local_rank`` arguments, and
    ``--debug``."""
    add_debug_arg(parser)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def add_shape_arg(parser: argparse.ArgumentParser, help: str) -> None:
    """Add ``--shape H [W]`` (default 224); read it back with :func:`parse_shape`."""
    parser.add_argument('--shape', type=int, nargs='+', default=[224], help=help)


def parse_shape(parser: argparse.ArgumentParser, shape: list[int],
                minimum: int = 1) -> tuple[int, int]:
    """``(H, W)`` from ``--shape``'s one (square) or two values.

    Exits through ``parser.error`` naming the bad value otherwise.

    Example:
        >>> parse_shape(argparse.ArgumentParser(), [800, 1333])
        (800, 1333)
        >>> parse_shape(argparse.ArgumentParser(), [224])
        (224, 224)
    """
    if len(shape) not in (1, 2) or min(shape) < minimum:
        parser.error(f'--shape takes H or H W (each >= {minimum}), got {shape}')
    return (shape[0], shape[-1])


def check_input_size(run: Callable[[tuple[int, int]], object], shape: tuple[int, int],
                     what: str, option: str = '--shape') -> None:
    """Raise ``UserError`` naming the value when ``run(shape)`` fails on a too-small input.

    ``run`` runs the model once on an input of the given (H, W). If it raises
    ``RuntimeError`` or ``ValueError`` (e.g. a pooling output size of 0), larger square
    sizes (multiples of 16, up to 1024) are tried to name the smallest that works; if
    none does, the original error is re-raised (it is not about the size).
    """
    try:
        run(shape)
        return
    except (RuntimeError, ValueError) as err:
        first = ' '.join(str(err).split())[:160]
        for size in range(16 * (max(shape) // 16 + 1), 1025, 16):
            try:
                run((size, size))
            except (RuntimeError, ValueError):
                continue
            h, w = shape
            raise UserError(f'{option} {h} {w}: {what} cannot run on a {h}x{w} input '
                            f'({first}); use {option} {size} or larger') from err
        raise


def parse_launch_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` and export ``LOCAL_RANK`` for launchers that pass it as a flag."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_tool_config(path: str | os.PathLike, cfg_options: dict | None = None,
                     work_dir: str | None = None, launcher: str = 'none') -> Config:
    """Read a config, apply ``--cfg-options``, the launcher and the work dir.

    The work dir defaults to ``./work_dirs/<config name>`` as in mmdet.

    Example:
        >>> load_tool_config('configs/retinanet_condensenetv2_c.py').work_dir
        './work_dirs/retinanet_condensenetv2_c'
    """
    path = os.fspath(path)
    cfg = read_config(path, cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def prepare_launcher(cfg: Config, launcher: str) -> None:
    """Start CPU distributed training by hand where mmengine would need a GPU.

    When a gloo process group was started (no GPU), the DDP wrapper is configured
    without GPU ``device_ids`` (mmengine's default passes ``[LOCAL_RANK]``).
    """
    if init_cpu_dist(launcher) and cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
