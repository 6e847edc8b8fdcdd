#!/usr/bin/env python
"""Inference speed of the model a config builds: images/s, model-only timing.

Examples:
    python tools/analysis_tools/benchmark.py configs/retinanet_condensenetv2_c.py \\
        --shape 800 1333 --batch-size 1 --repeats 20 --threads 2
    python tools/analysis_tools/benchmark.py \\
        configs/pretrain/condensenetv2/condensenetv2-c_deploy_in1k.py --shape 224
    python tools/analysis_tools/benchmark.py condensenetv2-c_deploy_in1k --threads 2

Times only the model's forward (``mode='tensor'`` for classifiers and detectors, or the
backbone alone with ``--backbone-only``) on a fixed random input already in memory: no
data loading or pre-processing. ``--warmup`` iterations are run first and excluded; the
table reports the median and the spread of ``--repeats`` timed iterations.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from mmengine.config import DictAction

import mmsfr  # noqa: F401
from mmsfr.apis import init_model
from mmsfr.utils.cli import add_debug_arg, tool_main
from mmsfr.utils.tool_setup import add_shape_arg, check_input_size, parse_shape


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file (mmdet or mmpretrain), or the name of a '
                        'config shipped with mmsfr')
    add_shape_arg(parser, help='input H [W] (default 224)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--warmup', type=int, default=3, help='untimed iterations')
    parser.add_argument('--repeats', type=int, default=10, help='timed iterations')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    parser.add_argument('--backbone-only', action='store_true', help='time the backbone only')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    args.shape = parse_shape(parser, args.shape, minimum=16)
    for name in ('batch_size', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    return args


def time_forward(fn, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times


@tool_main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = init_model(args.config, cfg_options=args.cfg_options)
    h, w = args.shape
    x = torch.rand(args.batch_size, 3, h, w)
    if args.backbone_only:
        fn = lambda: model.backbone(x)  # noqa: E731
    else:
        fn = lambda: model(x, mode='tensor')  # noqa: E731

    def run(size: tuple[int, int]) -> None:  # one image: a too small --shape is named
        image = torch.rand(1, 3, *size)
        with torch.inference_mode():
            model.backbone(image) if args.backbone_only else model(image, mode='tensor')

    check_input_size(run, (h, w), 'the backbone' if args.backbone_only else type(model).__name__)
    times = time_forward(fn, args.warmup, args.repeats)
    median = statistics.median(times)
    what = 'backbone' if args.backbone_only else type(model).__name__
    print(f'{what} of {args.config}, input {args.batch_size}x3x{h}x{w}, '
          f'{torch.get_num_threads()} threads, {args.warmup} warm-up + {args.repeats} timed')
    print(f'{"metric":<24}{"value":>12}')
    print(f'{"median latency (ms)":<24}{median * 1e3:>12.2f}')
    print(f'{"min / max (ms)":<24}{min(times) * 1e3:>6.1f}/{max(times) * 1e3:<5.1f}')
    print(f'{"images/s":<24}{args.batch_size / median:>12.2f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
