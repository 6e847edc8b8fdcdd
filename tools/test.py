#!/usr/bin/env python
"""Evaluate a checkpoint: COCO bbox mAP for detectors, top-1/top-5 for classifiers.

Examples:
    python tools/test.py configs/retinanet_condensenetv2_c.py work_dirs/x/epoch_12.pth
    python tools/test.py configs/pretrain/condensenetv2/condensenetv2-c_deploy_in1k.py \\
        checkpoints/condensenetv2_c_deploy_in1k.pth --out results.pkl
    bash tools/dist_test.sh configs/retinanet_condensenetv2_c.py epoch_12.pth 8

Same arguments as mmdet 3.x's tools/test.py.
"""
import argparse
import sys

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmsfr  # noqa: F401
from mmsfr.checkpoint import check_loadable, check_output, check_writable_dir
from mmsfr.utils.cli import UserError, tool_main
from mmsfr.utils.config_check import check_config
from mmsfr.utils.dist import close_dist
from mmsfr.utils.tool_setup import (add_launch_args, load_tool_config, parse_launch_args,
                                    prepare_launcher)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save evaluation results')
    parser.add_argument('--out', help='dump predictions to this pickle file')
    parser.add_argument('--show-dir', help='save images with drawn predictions here '
                        '(relative to the run\'s timestamp dir, detectors only)')
    add_launch_args(parser)
    return parse_launch_args(parser, argv)


@tool_main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if '://' not in args.checkpoint:
        check_loadable(args.checkpoint)  # one clear error if refused or unreadable
    if args.out:
        check_output(args.out, args.config, args.checkpoint)
    check_writable_dir(cfg.work_dir, 'the work dir')
    cfg.load_from = args.checkpoint
    # Evaluating a trained checkpoint: the backbone's pretrained init is not needed.
    if cfg.model.get('backbone', {}).get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None
    is_det = cfg.get('default_scope') == 'mmdet'
    if args.show_dir:
        if not is_det:
            raise UserError('--show-dir is supported for detectors only')
        cfg.default_hooks.visualization.draw = True
        cfg.default_hooks.visualization.test_out_dir = args.show_dir
    check_config(cfg, args.config, training=False)
    prepare_launcher(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out:
        if is_det:
            from mmdet.evaluation import DumpDetResults as Dump
        else:
            from mmengine.evaluator import DumpResults as Dump
        runner.test_evaluator.metrics.append(Dump(out_file_path=args.out))
    runner.test()
    close_dist()
    return 0


if __name__ == '__main__':
    sys.exit(main())
