"""Argument and config handling shared by the tools (train, test, convert_to_deploy,
get_flops, benchmark, export_onnx)."""
from __future__ import annotations

import argparse
import difflib
import os
import os.path as osp
from typing import Callable

from mmengine.config import Config, DictAction

from .cli import UserError, add_debug_arg, one_line
from .dist import init_cpu_dist

__all__ = ['add_debug_arg', 'add_launch_args', 'add_shape_arg', 'check_input_size',
           'load_tool_config', 'parse_launch_args', 'parse_shape', 'prepare_launcher',
           'read_config']


def _config_hint(path: str) -> str:
    folder = osp.dirname(path) or '.'
    if not osp.isdir(folder):
        return f'the folder {folder} does not exist either'
    names = [n for n in os.listdir(folder) if n.endswith('.py')]
    close = difflib.get_close_matches(osp.basename(path), names, n=1)
    if close:
        return f'did you mean {osp.join(osp.dirname(path), close[0])}?'
    return 'check the path (the configs are under configs/)'


def read_config(path: str, cfg_options: dict | None = None) -> Config:
    """Read a config file and apply ``--cfg-options``; one clear error if it cannot be.

    Raises:
        UserError: the file is missing (with the closest name in its folder), is not
            valid Python, or names a missing ``_base_`` file.

    Example:
        >>> read_config('configs/retinanet_condensenetv2_cc.py')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmsfr.utils.cli.UserError: config configs/retinanet_condensenetv2_cc.py not found; did you mean configs/retinanet_condensenetv2_c.py?
    """
    path = str(path)
    if not osp.isfile(path):
        raise UserError(f'config {path} not found; {_config_hint(path)}')
    try:
        cfg = Config.fromfile(path)
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


def load_tool_config(path: str, cfg_options: dict | None = None, work_dir: str | None = None,
                     launcher: str = 'none') -> Config:
    """Read a config, apply ``--cfg-options``, the launcher and the work dir.

    The work dir defaults to ``./work_dirs/<config name>`` as in mmdet.

    Example:
        >>> cfg = load_tool_config('configs/retinanet_condensenetv2_c.py')  # doctest: +SKIP
        >>> cfg.work_dir  # doctest: +SKIP
        './work_dirs/retinanet_condensenetv2_c'
    """
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
