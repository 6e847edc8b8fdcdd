#!/usr/bin/env python
"""Convert a train-time (masked) mmsfr checkpoint to the exact deploy form.

Example:
    python tools/convert_to_deploy.py \\
        configs/pretrain/condensenetv2/condensenetv2-c_8xb128_in1k.py \\
        work_dirs/condensenetv2-c_8xb128_in1k/epoch_350.pth \\
        checkpoints/condensenetv2_c_deploy_in1k.pth

    # a plain ShuffleNetV2: its conv -> BN pairs folded into biased convs
    python tools/convert_to_deploy.py \\
        configs/pretrain/shufflenetv2/shufflenetv2-x1_0_8xb128_in1k.py \\
        shufflenetv2_x1_0.pth shufflenetv2_x1_0_deploy.pth

Loads CHECKPOINT (its ``state_dict``; with mmengine's EMAHook that already holds the
EMA weights) into the model CONFIG builds, checks that every LGC/SFR layer finished
condensation (else it stops, naming the layer and its stage, and writes nothing),
converts (index-select + group conv for LGC, group conv + index_add for SFR; every
ShuffleNet conv -> BN pair folded into one conv) and saves OUT, which loads into the
matching ``*_deploy_*.py`` config (for a plain ShuffleNet: CONFIG with
``--cfg-options model.backbone.deploy=True``).
"""
import argparse
import sys

import mmsfr  # noqa: F401
from mmsfr.apis import deploy_checkpoint, init_model
from mmsfr.checkpoint import check_output
from mmsfr.utils.cli import add_debug_arg, not_written, tool_main


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='train-time config the checkpoint was trained with '
                        '(a path, or the name of a config shipped with mmsfr)')
    parser.add_argument('checkpoint', help='train-time checkpoint (masked weights)')
    parser.add_argument('out', help='output deploy checkpoint (never an input file)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    add_debug_arg(parser)
    return parser.parse_args(argv)


@tool_main
def main(argv=None) -> int:
    args = parse_args(argv)
    with not_written(args.out):
        check_output(args.out, args.checkpoint, args.config)
        model = init_model(args.config, args.checkpoint, cfg_options=args.cfg_options)
        deploy_checkpoint(model, args.out, src=args.checkpoint, inputs=(args.config, ),
                          meta=dict(config=args.config, source=args.checkpoint))
    print(f'wrote {args.out} (deploy form)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
