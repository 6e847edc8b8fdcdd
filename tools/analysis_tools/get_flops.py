"""Count the complexity of the model a config builds, in both FLOPs conventions.

Prints a table with

* conv + linear multiply-adds (megvii's / mmengine's core convention, BN not counted);
* the CondenseNet papers' FLOPs (multiply-adds + activation and pooling element ops);
* parameters, with and without BatchNorm;
* mmengine's own count (``get_model_complexity_info``; it adds BatchNorm).

Train-time (masked) LGC/SFR layers are counted as their deploy form (see
:mod:`mmsfr.analysis.complexity`). Classifiers are run on one ``1x3xHxW`` input;
detectors (mmdet configs) are run whole, in ``mode='tensor'``, on a dummy image padded
to the data preprocessor's ``pad_size_divisor``: no dataset is needed.
"""
from __future__ import annotations

import argparse
import sys

import torch
from mmengine.config import DictAction

from mmsfr.utils.cli import add_debug_arg, tool_main
from mmsfr.utils.tool_setup import add_shape_arg, check_input_size, parse_shape

EPILOG = """examples:
  python tools/analysis_tools/get_flops.py \\
      configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py
  python tools/analysis_tools/get_flops.py condensenetv2-a_deploy_in1k
  python tools/analysis_tools/get_flops.py my_detector_config.py --shape 800 1333
  python tools/analysis_tools/get_flops.py \\
      configs/pretrain/condensenet/condensenet-c_8xb128_in1k.py --shape 256 --no-mmengine

The two conventions: 'conv+linear MACs' counts only convolution and matrix-product
multiply-adds; 'paper FLOPs' (the CondenseNet papers' measure_model) adds one op per
ReLU/ReLU6/hard-swish output element, two per sigmoid element and the average-pooling
kernel ops. Counts are for one image (batch 1).
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Count multiply-adds, the CondenseNet papers\' FLOPs and params '
        'of the model a config builds (classifiers and mmdet detectors).',
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file (mmpretrain or mmdet style), or the name '
                        'of a config shipped with mmsfr')
    add_shape_arg(parser, help='input size: one value H (square) or two values H W '
                  '(default: 224; detectors typically 800 1333)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.backbone.arch=b')
    parser.add_argument('--as-is', action='store_true',
                        help='count train-time LGC/SFR layers as they run (dense masked '
                        '1x1 convs) instead of in their deploy form')
    parser.add_argument('--no-mmengine', action='store_true',
                        help="skip mmengine's get_model_complexity_info count (jit trace)")
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    args.shape = parse_shape(parser, args.shape)
    return args


def _fmt(value: float | None, unit: str) -> str:
    from mmsfr.analysis import format_count
    return 'n/a' if value is None else format_count(value, unit)


@tool_main
def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code."""
    args = parse_args(argv)
    from mmsfr.analysis import config_forward, count_complexity, count_mmengine
    from mmsfr.apis import init_model

    model = init_model(args.config, cfg_options=args.cfg_options)
    cfg = model.cfg
    hw, forward = config_forward(model, cfg, args.shape)
    shape = (3, *hw)
    as_deploy = not args.as_is

    def run(size: tuple[int, int]) -> None:
        padded, fwd = config_forward(model, cfg, size)
        with torch.no_grad():
            fwd(model, torch.rand(1, 3, *padded))

    try:
        counts = count_complexity(model, shape, forward=forward, as_deploy=as_deploy)
    except (RuntimeError, ValueError):  # a too small --shape: name the smallest that runs
        check_input_size(run, args.shape, type(model).__name__)
        raise
    mme: dict[str, int] | None = None
    mme_error = ''
    if not args.no_mmengine:
        try:
            mme = count_mmengine(model, shape, forward=forward, as_deploy=as_deploy)
        except Exception as exc:  # tracing may fail on exotic models; report, go on
            mme_error = f'{type(exc).__name__}: {exc}'.splitlines()[0][:120]

    unit = 'G' if counts['paper_flops'] >= 1e9 else 'M'
    rows = [
        ('conv+linear MACs', _fmt(counts['conv_linear_macs'], unit)),
        ('paper FLOPs (+act/pool ops)', _fmt(counts['paper_flops'], unit)),
        ('  of which activation ops', _fmt(counts['act_ops'], unit)),
        ('  of which pooling ops', _fmt(counts['pool_ops'], unit)),
        ('params', _fmt(counts['params'], 'M')),
        ('params without BN', _fmt(counts['params_no_bn'], 'M')),
    ]
    if mme is not None:
        rows += [
            ('mmengine FLOPs (with BN)', _fmt(mme['flops'], unit)),
            ('mmengine FLOPs without BN', _fmt(mme['flops_no_bn'], unit)),
            ('mmengine params', _fmt(mme['params'], 'M')),
        ]
    elif args.no_mmengine:
        rows.append(('mmengine FLOPs', 'skipped'))
    else:
        rows.append(('mmengine FLOPs', f'failed ({mme_error})'))

    form = 'as built' if args.as_is else 'deploy form'
    print(f'model: {type(model).__name__} ({form}), input 1x{shape[0]}x{hw[0]}x{hw[1]}')
    width = max(len(r[0]) for r in rows)
    line = '-' * (width + 16)
    print(line)
    print(f'{"metric":<{width}}  {"value":>12}')
    print(line)
    for name, value in rows:
        print(f'{name:<{width}}  {value:>12}')
    print(line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
