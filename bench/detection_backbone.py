#!/usr/bin/env python
"""Detection-size backbone speed: CondenseNetV2-C deploy vs its reference form and R-50.

Example:
    python bench/detection_backbone.py               # 1x3x800x1333, 2 threads
    python bench/detection_backbone.py --shape 512 512 --threads 1 --repeats 5

Times the backbone of ``configs/retinanet_condensenetv2_c.py`` (CondenseNetV2-C,
deploy form, outputs at strides 4-32) on one image, interleaved round-robin with

* the same backbone in the reference form (``bench/reference_form.py``: grouped
  ``nn.Conv2d``, dense float scatter matrices, four-op hard-swish), same weights;
* mmdet's ResNet-50 (``out_indices=(0, 1, 2, 3)``), the backbone of the RetinaNet /
  Faster R-CNN baselines;
* when ``mmsfr._ext`` is built, mmsfr's backbone once more with PyTorch ops only (the
  path without the extension, ``MMSFR_NATIVE=0``).

Checks: mmsfr >= 3x faster than the reference form with outputs equal within 1e-5
(max |diff| / max |output| per level) and >= 6x faster than ResNet-50. A profile of the
slowest ops of the mmsfr backbone is printed with ``--profile``.

``--tuned-malloc`` re-runs the script with glibc's malloc told to keep freed memory
(``GLIBC_TUNABLES`` mmap/trim thresholds): by default every tensor above 32 MB is a
fresh ``mmap`` whose pages fault in on first touch, which at this input size costs
more than the arithmetic of many layers. All three backbones run under the same
setting; the first line of the output says which one was used.
"""
from __future__ import annotations

import torch
from mmdet.models.backbones import ResNet

from _common import (add_malloc_arg, apply_malloc_arg, base_parser, check_positive,
                     condensed, deploy_copy, kernels_status, macs, ops, print_table,
                     pytorch_kernels, rel_diff, time_interleaved, verdict)
from mmsfr.models import CondenseNetV2
from reference_form import reference_backbone, scatter_bytes


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    parser.set_defaults(repeats=5, warmup=1)
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1333],
                        metavar=('H', 'W'), help='input size (default 800 1333)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    add_malloc_arg(parser)
    parser.add_argument('--profile', action='store_true',
                        help='also print the top ops of one mmsfr forward')
    args = parser.parse_args(argv)
    check_positive(parser, args, 'threads')
    malloc = apply_malloc_arg(args)
    if min(args.shape) < 32:
        parser.error(f'--shape must be >= 32 on each side, got {args.shape}')
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = (96, 160) if args.quick else args.shape
    repeats, warmup = (1, 0) if args.quick else (args.repeats, args.warmup)

    masked = condensed(CondenseNetV2('c', out_indices=(1, 2, 3, 4)))
    ours = deploy_copy(masked)
    r50 = ResNet(50, out_indices=(0, 1, 2, 3))
    r50.eval()  # mmdet's ResNet.train() returns None: no chaining
    models = {
        'mmsfr CondenseNetV2-C (deploy)': ours,
        'reference form CondenseNetV2-C': reference_backbone(ours),
        'mmdet ResNet-50': r50,
    }
    plain = 'mmsfr CondenseNetV2-C (deploy), PyTorch ops'
    if ops.native_enabled():
        models[plain] = ours
    x = torch.rand(1, 3, h, w)
    fns = {name: (lambda m=m: m(x)) for name, m in models.items()}
    if plain in fns:
        fns[plain] = pytorch_kernels(fns[plain])
    with torch.inference_mode():
        outs = {name: fn() for name, fn in fns.items()}
    times = time_interleaved(fns, repeats, warmup)
    ours_t = times['mmsfr CondenseNetV2-C (deploy)']
    rows = [[name, macs(m, (1, 3, h, w)) / 1e9, times[name], times[name] / ours_t]
            for name, m in models.items()]
    print(f'input 1x3x{h}x{w}, {args.threads} thread(s), {repeats} interleaved rounds '
          f'after {warmup} warm-up (backbone only, no autograd); allocator: {malloc}; '
          f'deploy layers: {kernels_status()}')
    print_table('Backbone latency (median)', ['backbone', 'GMACs', 's', 'x mmsfr'], rows)

    diff = max(rel_diff(a, b) for other in ('reference form CondenseNetV2-C', plain)
               if other in outs
               for a, b in zip(outs['mmsfr CondenseNetV2-C (deploy)'], outs[other]))
    vs_ref = times['reference form CondenseNetV2-C'] / ours_t
    vs_r50 = times['mmdet ResNet-50'] / ours_t
    print_table('Targets', ['check', 'value', 'result'], [
        ['speed-up over the reference form >= 3x', vs_ref, verdict(vs_ref >= 3)],
        ['outputs equal to the reference form and PyTorch ops (rel.) <= 1e-5', f'{diff:.1e}',
         verdict(diff <= 1e-5)],
        ['speed-up over mmdet ResNet-50 >= 6x', vs_r50, verdict(vs_r50 >= 6)],
    ])
    print_table('SFR scatter state', ['form', 'MB'], [
        ['reference form (dense float matrices)', scatter_bytes(models['reference form CondenseNetV2-C']) / 2**20],
        ['mmsfr (int64 index buffers)', scatter_bytes(ours) / 2**20],
    ])
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            ours(x)
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15))
    return 0 if diff <= 1e-5 else 1


if __name__ == '__main__':
    raise SystemExit(main())
