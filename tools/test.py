#!/usr/bin/env python
"""Evaluate a checkpoint: COCO bbox mAP for detectors, top-1/top-5 for classifiers.

Examples:
    python tools/test.py configs/retinanet_condensenetv2_c.py work_dirs/x/epoch_12.pth
    python tools/test.py configs/retinanet_condensenetv2_c.py epoch_12.pth --out preds.pkl
    python tools/test.py configs/retinanet_condensenetv2_c.py epoch_12.pth --show-dir vis
    python tools/test.py configs/demo/retinanet_condensenetv2_demo.py \\
        work_dirs/demo_retinanet_condensenetv2/epoch_24.pth --tta
    python tools/test.py configs/retinanet_condensenetv2_c.py epoch_12.pth --cfg-options \\
        test_evaluator.format_only=True test_evaluator.outfile_prefix=results
    python tools/test.py configs/pretrain/condensenetv2/condensenetv2-c_deploy_in1k.py \\
        checkpoints/condensenetv2_c_deploy_in1k.pth --out results.pkl
    bash tools/dist_test.sh configs/retinanet_condensenetv2_c.py epoch_12.pth 8

Same arguments as mmdet 3.x's tools/test.py, with its meaning:
  --out FILE.pkl    predictions pickled for offline evaluation (DumpDetResults; for
                    classifiers mmengine's DumpResults). COCO-format JSON instead:
                    --cfg-options test_evaluator.format_only=True
                    test_evaluator.outfile_prefix=PREFIX (writes PREFIX.bbox.json).
  --show            draw each prediction in a window (needs a display), --wait-time
                    seconds each (0: until a key is pressed).
  --show-dir DIR    save the drawn images in WORK_DIR/TIMESTAMP/DIR.
                    Both enable the config's default_hooks.visualization
                    (DetVisualizationHook); detectors only.
  --tta             test-time augmentation: the model is wrapped in the config's
                    tta_model and the test data run through its tta_pipeline (both
                    must be defined; configs/demo/retinanet_condensenetv2_demo.py
                    has an example).
The config's default_scope picks the registry (mmdet: detectors, mmpretrain:
classifiers).
"""
from __future__ import annotations

import argparse
import os
import sys

import mmsfr  # noqa: F401  (first: it imports the OpenMMLab stack quietly)
from mmengine.config import Config, ConfigDict
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmsfr.checkpoint import check_loadable, check_output, check_writable_dir
from mmsfr.utils.cli import UserError, tool_main
from mmsfr.utils.config_check import check_config
from mmsfr.utils.dist import close_dist
from mmsfr.utils.tool_setup import (add_launch_args, load_tool_config, parse_launch_args,
                                    prepare_launcher)

#: Suffixes of ``--out`` (mmengine's DumpResults and mmdet's DumpDetResults pickle).
PICKLE_SUFFIXES = ('.pkl', '.pickle')


def _seconds(text: str) -> float:
    """``--wait-time``: a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not value >= 0:
        raise argparse.ArgumentTypeError(f'expected seconds >= 0, got {text!r}')
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (mmdet 3.x's tools/test.py arguments plus ``--debug``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save evaluation results')
    parser.add_argument('--out', help='dump predictions to this pickle file (.pkl/.pickle)')
    parser.add_argument('--show', action='store_true',
                        help='show each image with its predictions in a window '
                             '(detectors only; needs a display)')
    parser.add_argument('--show-dir', help='save images with drawn predictions here '
                        '(relative to the run\'s timestamp dir, detectors only)')
    parser.add_argument('--wait-time', type=_seconds, default=2.0,
                        help='with --show: seconds each image is shown (0: until a key '
                             'is pressed; default: 2)')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation with the config\'s tta_model and '
                             'tta_pipeline')
    add_launch_args(parser)
    return parse_launch_args(parser, argv)


def is_detector(cfg: Config) -> bool:
    """An mmdet config (its ``default_scope``), as opposed to an mmpretrain one."""
    return cfg.get('default_scope') == 'mmdet'


def check_out_path(out: str, cfg: Config) -> None:
    """Raise ``UserError`` unless ``--out`` names a pickle file.

    For a detector evaluated with ``CocoMetric`` the message says how to get COCO JSON.
    """
    if out.endswith(PICKLE_SUFFIXES):
        return
    if not is_detector(cfg):
        raise UserError(f'--out {out}: the predictions are written as a pickle, so --out '
                        'must end in .pkl or .pickle')
    evaluator = cfg.get('test_evaluator')
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    hint = ''
    if any(isinstance(m, dict) and 'CocoMetric' in str(m.get('type', '')) for m in metrics):
        prefix = out
        for suffix in ('.bbox.json', '.json'):
            if prefix.endswith(suffix):
                prefix = prefix[:-len(suffix)]
                break
        hint = (f'; for COCO-format JSON run with --cfg-options '
                f'test_evaluator.format_only=True test_evaluator.outfile_prefix={prefix} '
                f'(writes {prefix}.bbox.json)')
    raise UserError(f'--out {out}: mmdet dumps the predictions as a pickle, so --out must '
                    f'end in .pkl or .pickle{hint}')


def has_display() -> bool:
    """Whether ``--show`` can open a window (on Linux: ``DISPLAY`` or ``WAYLAND_DISPLAY``)."""
    if not sys.platform.startswith('linux'):
        return True
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    """``--show`` / ``--show-dir``: turn on the config's visualization hook (as mmdet)."""
    flags = ' / '.join(f for f, on in (('--show', args.show), ('--show-dir', args.show_dir))
                       if on)
    if not is_detector(cfg):
        raise UserError(f'{flags} is supported for detectors only')
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise UserError(f'{flags} needs default_hooks.visualization in {args.config}; add '
                        "default_hooks = dict(visualization=dict(type='DetVisualizationHook'))")
    if args.show and not has_display():
        raise UserError('--show needs a display to open a window and none is set (no '
                        'DISPLAY or WAYLAND_DISPLAY); use --show-dir DIR to save the drawn '
                        'images instead')
    hook.draw = True
    if args.show:
        hook.show = True
        hook.wait_time = args.wait_time
    if args.show_dir:
        hook.test_out_dir = args.show_dir


def check_tta(cfg: Config, config: str) -> None:
    """``--tta`` needs the config's ``tta_model`` and ``tta_pipeline``; name what is missing."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if cfg.get(key) is None]
    if missing:
        raise UserError(
            f'--tta: {config} defines no {" and no ".join(missing)}; --tta needs both '
            '(a merging model such as DetTTAModel and a test pipeline with a TestTimeAug '
            'step), as configs/demo/retinanet_condensenetv2_demo.py defines them')


def apply_tta(cfg: Config) -> None:
    """Wrap the model in ``cfg.tta_model`` and test on ``cfg.tta_pipeline`` (as mmdet)."""
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def build_cfg(args: argparse.Namespace) -> Config:
    """The test config with the command line applied (``--tta`` is checked, not applied).

    Raises:
        UserError: a bad ``--out`` suffix, ``--show`` without a display, ``--show`` /
            ``--show-dir`` for a classifier or without a visualization hook, ``--tta``
            for a config without ``tta_model`` / ``tta_pipeline``.
    """
    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.out:
        check_out_path(args.out, cfg)
    cfg.load_from = args.checkpoint
    # Evaluating a trained checkpoint: the backbone's pretrained init is not needed.
    if cfg.model.get('backbone', {}).get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        check_tta(cfg, args.config)
    return cfg


@tool_main
def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; see the module docstring. Returns the exit status."""
    args = parse_args(argv)
    cfg = build_cfg(args)
    if '://' not in args.checkpoint:
        check_loadable(args.checkpoint)  # one clear error if refused or unreadable
    if args.out:
        check_output(args.out, args.config, args.checkpoint)
    check_writable_dir(cfg.work_dir, 'the work dir')
    check_config(cfg, args.config, training=False)  # on the model before any TTA wrapper
    if args.tta:
        apply_tta(cfg)
    prepare_launcher(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out:
        if is_detector(cfg):
            from mmdet.evaluation import DumpDetResults as Dump
        else:
            from mmengine.evaluator import DumpResults as Dump
        runner.test_evaluator.metrics.append(Dump(out_file_path=args.out))
    runner.test()
    close_dist()
    return 0


if __name__ == '__main__':
    sys.exit(main())
