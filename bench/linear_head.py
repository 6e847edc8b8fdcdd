#!/usr/bin/env python
"""Classifier-head Linear layers at batch 1: torch's product vs mmsfr's streaming kernel.

Example:
    python bench/linear_head.py               # cold cache, 1 thread, 30 rounds
    python bench/linear_head.py --threads 2
    python bench/linear_head.py --quick       # CI smoke mode: small layers, 1 round

At batch 1 a classifier head is a chain of matrix-vector products: each Linear layer
reads its whole weight once, so its time is the time to stream the weight from memory.
In a whole forward the backbone's features have pushed the head's weights out of the
cache; this script does the same before every call, by writing a 64 MB buffer, then
times one call. Rows: the Linear layers of CondenseNetV2-C's classifier tail (the SE
on the pooled vector, 2064 -> 129 -> 2064; fc 2064 -> 1024; classifier 1024 -> 1000)
and of ShuffleNetV2 1.5x's (1024 -> 1000), each as ``nn.Linear`` (torch's product; MKL's
``sgemv`` in torch's x86 builds) and as :class:`mmsfr.models.layers.FastLinear`
(``mmsfr.ops.linear_``), interleaved round-robin, medians reported with the rate at
which the weight was read (GB/s). The target: the CondenseNetV2-C tail with
``FastLinear`` <= 1.0x ``nn.Linear``; every output is checked against ``nn.Linear``'s.
"""
from __future__ import annotations

import torch
from torch import nn

from _common import (base_parser, check_positive, print_table, rel_diff, time_interleaved,
                     verdict)
from mmsfr import ops
from mmsfr.models.layers import FastLinear

#: (name, in_features, out_features, bias) of the layers timed.
LAYERS = (('CondenseNetV2-C SE squeeze', 2064, 129, False),
          ('CondenseNetV2-C SE excite', 129, 2064, False),
          ('CondenseNetV2-C fc', 2064, 1024, True),
          ('CondenseNetV2-C classifier', 1024, 1000, True),
          ('ShuffleNetV2 1.5x fc', 1024, 1000, True))
TAIL = 'CondenseNetV2-C'
#: Bytes written between calls to evict the weights from the caches.
EVICT_BYTES = 64 << 20


def main() -> int:
    parser = base_parser(__doc__)
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    args = parser.parse_args()
    check_positive(parser, args, 'threads')
    torch.set_num_threads(args.threads)
    if not ops.native_available():
        print(f'mmsfr._ext: {ops.STATUS}; FastLinear runs nn.Linear\'s forward')
    scale = 16 if args.quick else 1
    repeats = 1 if args.quick else args.repeats
    evict = torch.zeros((EVICT_BYTES // scale) // 4)
    torch.manual_seed(0)
    rows, worst, totals = [], 0.0, {'torch': 0.0, 'mmsfr': 0.0}
    for name, fan_in, fan_out, bias in LAYERS:
        fan_in, fan_out = max(1, fan_in // scale), max(1, fan_out // scale)
        fast = FastLinear(fan_in, fan_out, bias=bias)
        plain = nn.Linear(fan_in, fan_out, bias=bias)
        plain.load_state_dict(fast.state_dict())
        x = torch.randn(1, fan_in)
        with torch.inference_mode():
            worst = max(worst, rel_diff(fast(x), plain(x)))
        t = time_interleaved({'torch': lambda: plain(x), 'mmsfr': lambda: fast(x)}, repeats,
                             0 if args.quick else args.warmup,
                             before_each=lambda: evict.add_(1.0))
        mbytes = fast.weight.numel() * 4 / 1e6
        if name.startswith(TAIL):
            for key in totals:
                totals[key] += t[key]
        rows.append([name, f'{fan_in} -> {fan_out}', f'{mbytes:.2f}',
                     f'{t["torch"] * 1e6:.1f}', f'{t["mmsfr"] * 1e6:.1f}',
                     f'{mbytes / 1e3 / t["torch"]:.1f}', f'{mbytes / 1e3 / t["mmsfr"]:.1f}',
                     f'{t["mmsfr"] / t["torch"]:.2f}'])
    print(f'batch 1, {args.threads} thread(s), cold cache ({EVICT_BYTES // scale >> 20} MB '
          f'written before each call), {repeats} interleaved rounds; mmsfr._ext: '
          f'{ops.STATUS}' + (f' ({ops.isa()})' if ops.native_available() else ''))
    print_table('Linear layers (median)',
                ['layer', 'shape', 'weight MB', 'nn.Linear us', 'FastLinear us',
                 'nn.Linear GB/s', 'FastLinear GB/s', 'FastLinear x nn.Linear'], rows)
    ratio = totals['mmsfr'] / totals['torch']
    ok = ratio <= 1.0
    print_table('Targets', ['check', 'ratio', 'result'],
                [[f'{TAIL} tail (SE, fc, classifier): FastLinear <= 1.0x nn.Linear',
                  f'{ratio:.2f}', verdict(ok)]])
    print(f'FastLinear vs nn.Linear outputs: max relative difference {worst:.1e}')
    return 0 if worst <= 1e-5 else 1


if __name__ == '__main__':
    raise SystemExit(main())
