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

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import mmsfr  # noqa: F401
from mmsfr.apis import deploy_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='train-time config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='train-time checkpoint (masked weights)')
    parser.add_argument('out', help='output deploy checkpoint (never the input file)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    from mmengine.registry import MODELS
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    model.eval()
    try:
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True,
                        logger='silent')
        deploy_checkpoint(model, args.out, src=args.checkpoint,
                          meta=dict(config=args.config, source=args.checkpoint))
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f'error: {err}\n{args.out} was not written', file=sys.stderr)
        return 1
    print(f'wrote {args.out} (deploy form)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
