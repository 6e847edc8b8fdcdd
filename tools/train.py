#!/usr/bin/env python
"""Train a detector or classifier from an mmsfr / mmdet / mmpretrain config.

Examples:
    python tools/train.py configs/retinanet_condensenetv2_c.py
    python tools/train.py configs/retinanet_condensenetv2_c.py --amp --auto-scale-lr
    python tools/train.py configs/demo/retinanet_condensenetv2_demo.py --resume
    bash tools/dist_train.sh configs/retinanet_condensenetv2_c.py 8

Same arguments as mmdet 3.x's tools/train.py. The config's ``default_scope`` picks the
registry (``mmdet`` for detectors, ``mmpretrain`` for classifiers).
"""
import argparse
import sys

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmsfr  # noqa: F401  (registers models; allows mmengine checkpoints)
from mmsfr.checkpoint import check_loadable, check_writable_dir
from mmsfr.utils.cli import tool_main
from mmsfr.utils.config_check import check_config, check_resume_checkpoint
from mmsfr.utils.dist import close_dist
from mmsfr.utils.tool_setup import (add_launch_args, load_tool_config, parse_launch_args,
                                    prepare_launcher)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual batch size (auto_scale_lr in config)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or the latest in work-dir')
    add_launch_args(parser)
    return parse_launch_args(parser, argv)


def build_cfg(args):
    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError(f'{args.config} has no auto_scale_lr.base_batch_size; '
                             '--auto-scale-lr needs it')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


@tool_main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = build_cfg(args)
    check_writable_dir(cfg.work_dir, 'the work dir')
    check_config(cfg, args.config)
    if cfg.get('resume'):
        check_resume_checkpoint(cfg, args.config)
    elif cfg.get('load_from') and '://' not in str(cfg.load_from):
        check_loadable(cfg.load_from, what='load_from checkpoint')  # before mmengine loads it
    prepare_launcher(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    close_dist()
    return 0


if __name__ == '__main__':
    sys.exit(main())
