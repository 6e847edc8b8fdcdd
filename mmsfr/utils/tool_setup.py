"""Config handling shared by tools/train.py and tools/test.py."""
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
