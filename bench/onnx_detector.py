#!/usr/bin/env python
"""Whole-detector speed in onnxruntime: RetinaNet-CondenseNetV2-C vs RetinaNet-MobileNetV2.

Example:
    python bench/onnx_detector.py                    # 1x3x800x1344, 2 threads
    python bench/onnx_detector.py --threads 1 --repeats 5 --shape 512 512

Both RetinaNets (``configs/retinanet_condensenetv2_c.py``, deploy form, and
``configs/retinanet_mobilenetv2.py``: mmdet's RetinaNet 1x config with only the backbone
replaced, as the paper's Table 7 compares them) are built with random weights (random
BN statistics), exported whole by ``mmsfr.deployment`` (backbone, neck and head, the
graph ``tools/deployment/export_onnx.py`` writes, at a fixed input size) and timed in
onnxruntime (CPU execution provider, all graph optimisations) in one process,
interleaved round-robin; the eager PyTorch forward of each (``mode='tensor'``, with
mmsfr's C++ operators when built) is timed alongside. The input is the network input at
mmdet's test size: an 800x1333 image padded to a multiple of 32 (800x1344).
Post-processing (decoding, NMS) is not timed: it is the same for both.

Prints one row per model and runtime (median latency, ratio to RetinaNet-MobileNetV2
in onnxruntime, conv + matmul multiply-adds) and checks that each exported graph
reproduces PyTorch (max relative difference <= 1e-4 per output).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from _common import (base_parser, build, check_positive, kernels_status, macs, print_table,
                     rel_diff, time_interleaved)
from mmsfr.deployment import ExportModule, export_onnx
from mmsfr.deployment._onnx import cpu_session, ort
from mmsfr.testing import randomise_bn

MODELS = {
    'RetinaNet-CondenseNetV2-C': 'configs/retinanet_condensenetv2_c.py',
    'RetinaNet-MobileNetV2': 'configs/retinanet_mobilenetv2.py',
}
BASE = 'RetinaNet-MobileNetV2'


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    parser.set_defaults(repeats=5, warmup=1)
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1344], metavar=('H', 'W'),
                        help='network input size (default 800 1344: 800x1333 padded to 32)')
    parser.add_argument('--threads', type=int, default=2,
                        help='onnxruntime and torch threads (default 2)')
    args = parser.parse_args(argv)
    check_positive(parser, args, 'threads')
    if min(args.shape) < 64:
        parser.error(f'--shape must be >= 64 on each side, got {args.shape}')
    torch.set_num_threads(args.threads)
    size = (128, 160) if args.quick else tuple(args.shape)
    repeats, warmup = (1, 0) if args.quick else (args.repeats, args.warmup)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))

    fns, rows, worst = {}, {}, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in MODELS.items():
            torch.manual_seed(0)
            module = ExportModule(randomise_bn(build(config))).eval()
            path = Path(tmp) / f'{name}.onnx'
            export_onnx(module, path, size)
            sess = cpu_session(path, args.threads)
            feed = {sess.get_inputs()[0].name: x.numpy()}
            with torch.no_grad():
                expected = module(x)
            got = sess.run(None, feed)
            for a, b in zip(got, expected):
                worst = max(worst, rel_diff(torch.from_numpy(a), b))
            fns[f'{name}, onnxruntime'] = lambda s=sess, f=feed: s.run(None, f)
            fns[f'{name}, PyTorch eager'] = lambda m=module: m(x)
            rows[name] = macs(module.net, (1, 3, *size),
                              forward=lambda m, t: m(t, mode='tensor'))
        with torch.inference_mode():
            times = time_interleaved(fns, repeats, warmup)
    base = times[f'{BASE}, onnxruntime']
    table = [[label, rows[label.split(',')[0]] / 1e9, times[label] * 1e3, times[label] / base]
             for label in fns]
    print(f'input 1x3x{size[0]}x{size[1]}, {args.threads} thread(s), {repeats} interleaved '
          f'rounds after {warmup} warm-up; onnxruntime {ort.__version__} (CPU execution '
          f'provider); deploy CondenseNetV2 layers in PyTorch: {kernels_status()}')
    print_table('Whole RetinaNet (backbone + FPN + head, no post-processing), median',
                ['model, runtime', 'GMACs', 'ms', f'x {BASE} onnxruntime'], table)
    print(f'exported graphs vs PyTorch: max relative difference {worst:.1e}')
    if worst > 1e-4:
        print(f'ERROR: an exported graph differs from PyTorch by {worst:.1e} (> 1e-4)')
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
