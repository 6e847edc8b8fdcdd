"""Argument and config handling shared by the tools (train, test, get_flops, benchmark,
export_onnx)."""
from __future__ import annotations

import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

from .dist import init_cpu_dist


def add_launch_args(parser: argparse.ArgumentParser) -> None:
    """Add mmdet's ``--cfg-options``, ``--launcher`` and ``--local_rank`` arguments."""
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
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
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
