#!/usr/bin/env python
"""Peak memory of one detector training step, gradient checkpointing on and off.

Example:
    python bench/memory.py                      # 2 x 3 x 800 x 1333, ~10 minutes on CPU
    python bench/memory.py --shape 512 512 --batch-size 1

Each variant runs in a fresh process (``--child``) that builds the detector from its
config (random weights), runs one training step (forward with losses + backward) on
random images with a few boxes, and reports its peak resident set size
(``ru_maxrss``), both in total and as the increase over the process after building
the model (the step's own memory). Variants:

* ``configs/retinanet_condensenetv2_c.py`` with ``model.backbone.with_cp`` False / True;
* ``configs/retinanet_r50_fpn_1x_coco`` from mmdet (RetinaNet-R50), for scale.

Target: the CondenseNetV2-C step with ``with_cp=True`` peaks at <= 0.6x the RSS of
``with_cp=False``.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from _common import base_parser, print_table, verdict

VARIANTS = {
    'RetinaNet CondenseNetV2-C, with_cp=False': ('configs/retinanet_condensenetv2_c.py', False),
    'RetinaNet CondenseNetV2-C, with_cp=True': ('configs/retinanet_condensenetv2_c.py', True),
    'RetinaNet R-50 (mmdet)': ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', None),
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(config: str, with_cp: bool | None, shape: list[int], batch: int) -> dict:
    """One training step in this process; returns the RSS figures."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from mmsfr.apis import build_model

    torch.set_num_threads(2)
    torch.manual_seed(0)
    # build_model: the un-initialised model (no pretrained init), left in training mode.
    options = None if with_cp is None else {'model.backbone.with_cp': with_cp}
    model = build_model(config, cfg_options=options)
    model.train()
    h, w = shape
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             pad_shape=(h, w), scale_factor=(1.0, 1.0)))
        xy = torch.rand(4, 2, generator=g) * torch.tensor([w / 2, h / 2])
        wh = torch.rand(4, 2, generator=g) * torch.tensor([w / 2, h / 2]) + 16
        sample.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                           labels=torch.randint(0, 80, (4,), generator=g))
        inputs.append(torch.randint(0, 255, (3, h, w), generator=g, dtype=torch.uint8))
        samples.append(sample)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training=True)
    built = _rss_mb()
    losses = model(**data, mode='loss')
    total = sum(v.sum() for k, v in losses.items() if 'loss' in k
                for v in (v if isinstance(v, list) else [v]))
    total.backward()
    peak = _rss_mb()
    return dict(built_mb=built, peak_mb=peak, step_mb=peak - built)


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1333],
                        metavar=('H', 'W'), help='image size (default 800 1333)')
    parser.add_argument('--batch-size', type=int, default=2, help='images (default 2)')
    parser.add_argument('--child', choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or min(args.shape) < 32:
        parser.error(f'--batch-size must be >= 1 and --shape >= 32, got '
                     f'{args.batch_size} and {args.shape}')
    shape = [64, 96] if args.quick else args.shape
    batch = 1 if args.quick else args.batch_size
    if args.child:
        config, with_cp = VARIANTS[args.child]
        print(json.dumps(child(config, with_cp, shape, batch)))
        return 0

    results = {}
    for name in VARIANTS:
        cmd = [sys.executable, __file__, '--child', name, '--shape', *map(str, args.shape),
               '--batch-size', str(args.batch_size)] + (['--quick'] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            print(f'ERROR: variant {name!r} failed (exit {proc.returncode})')
            return 1
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f'one training step, batch {batch} x 3 x {shape[0]} x {shape[1]}, 2 threads, '
          'a fresh process per variant')
    print_table('Peak resident memory', ['variant', 'after build (MB)', 'peak (MB)',
                                         'step (MB)'],
                [[n, r['built_mb'], r['peak_mb'], r['step_mb']] for n, r in results.items()])
    off, on = (results[f'RetinaNet CondenseNetV2-C, with_cp={v}'] for v in (False, True))
    ratio, step_ratio = on['peak_mb'] / off['peak_mb'], on['step_mb'] / off['step_mb']
    print_table('Targets', ['check', 'ratio', 'result'], [
        ['peak RSS with_cp on / off <= 0.6', ratio, verdict(ratio <= 0.6)],
        ['step memory with_cp on / off (information)', step_ratio, '-'],
    ])
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
