#!/usr/bin/env python
"""Convert the authors' released checkpoints to mmsfr checkpoints.

Examples:
    python tools/model_converters/official_to_mmsfr.py --model condensenetv2_a \\
        converted_cdnv2_a.pth checkpoints/condensenetv2_a_deploy_in1k.pth
    python tools/test.py configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py \\
        checkpoints/condensenetv2_a_deploy_in1k.pth

Converted releases ({'state_dict'}, dense float ``sfr.index``) become deploy-form
checkpoints; training-script checkpoints (``state_dict`` + ``state_dict_ema`` with masks,
``args``) become train-time checkpoints (EMA weights preferred) that
tools/convert_to_deploy.py condenses. The output loads strictly into the config printed.
"""
import argparse
import sys

import mmsfr  # noqa: F401
from mmsfr.apis import convert_official
from mmsfr.converters import OFFICIAL_MODELS
from mmsfr.utils.cli import add_debug_arg, not_written, tool_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, choices=sorted(OFFICIAL_MODELS),
                        help='which released model SRC holds')
    parser.add_argument('src', help='released checkpoint')
    parser.add_argument('dst', help='output mmsfr checkpoint (never the input file)')
    add_debug_arg(parser)
    return parser.parse_args(argv)


@tool_main
def main(argv=None) -> int:
    args = parse_args(argv)
    with not_written(args.dst):
        meta = convert_official(args.model, args.src, args.dst)
    print(f"wrote {args.dst}: {meta['form']} form of {meta['model']} "
          f"(from '{meta['source_key']}'); load it with {meta['config']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
