#!/usr/bin/env python
"""What reaching mmsfr's C++ kernels costs: the extension's own bindings vs the dispatcher.

Example:
    python bench/dispatch_overhead.py               # CondenseNetV2-C deploy, 224, 1 thread
    python bench/dispatch_overhead.py --arch b --repeats 50
    python bench/dispatch_overhead.py --quick       # CI smoke mode: A at 64, 1 round

In plain eager inference the operator wrappers of :mod:`mmsfr.ops` call each kernel
through the extension's own binding of it (``mmsfr._ext.<name>``); under tracing, the
profiler or a dispatch mode they go through PyTorch's dispatcher
(``torch.ops.mmsfr.<name>``), which boxes the arguments before it calls the same kernel.
The script records the operator calls of one forward of a deploy CondenseNetV2
classifier (random weights, condensed) and prints two tables:

* per operator: the calls per forward and the microseconds per call of the binding and
  of ``torch.ops.mmsfr.<name>``, every call made on an empty batch (the kernel checks its
  arguments and returns, so the time is the way's own cost: argument conversion, the
  dispatcher's boxing and the checks);
* the whole forward (image -> logits) with the bindings and through the dispatcher only
  (the bindings hidden, as from an extension without them), interleaved round-robin.

Target: the forward with the bindings <= 1.0x the forward through the dispatcher. The
two forwards' logits must be equal (the same kernels run).
"""
from __future__ import annotations

from collections import Counter
from unittest import mock

import torch

from _common import (add_kernel_model_args, base_parser, check_positive, kernel_model,
                     kernels_status, print_table, time_interleaved, verdict)
from mmsfr.ops import dense_layer

#: How many leading arguments of each operator carry the batch (the buffer written, and
#: the input read where it is a separate tensor).
BATCHED = {'lgc_conv_': 1, 'sfr_': 1, 'se_': 1, 'avg_pool2x2_': 2, 'linear_': 2}


def record_calls(forward) -> list[tuple[str, tuple]]:
    """The operator calls ``forward()`` makes through the bindings, in order, with their
    batched arguments replaced by empty-batch tensors of the same shape otherwise."""
    calls = []

    def recorder(name, kernel):
        def record(*args):
            batched = tuple(a.new_empty(0, *a.shape[1:]) for a in args[:BATCHED[name]])
            calls.append((name, batched + args[BATCHED[name]:]))
            kernel(*args)
        return record

    spies = {name: recorder(name, kernel) for name, kernel in dense_layer._KERNELS.items()}
    with mock.patch.dict(dense_layer._KERNELS, spies), torch.inference_mode():
        forward()
    return calls


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    add_kernel_model_args(parser)
    args = parser.parse_args(argv)
    check_positive(parser, args, 'threads')
    setup = kernel_model(args, 'no kernels to reach')
    if setup is None:
        return 0
    model, arch, size, repeats, warmup = setup
    x = torch.rand(1, 3, size, size)

    def forward():
        return model(x, mode='tensor')

    calls = record_calls(forward)
    counts = Counter(name for name, _ in calls)
    ways = {'bindings': dense_layer._KERNELS,
            'dispatcher': {name: getattr(torch.ops.mmsfr, name) for name in counts}}

    def run_calls(name, fn):
        def run():
            for n, a in calls:
                if n == name:
                    fn(*a)
        return run

    fns = {f'{name}, {way}': run_calls(name, table[name])
           for name in counts for way, table in ways.items()}
    times = time_interleaved(fns, repeats * 10, warmup)
    rows, saved = [], 0.0
    for name, count in counts.items():
        direct, boxed = (times[f'{name}, {way}'] / count * 1e6 for way in ways)
        saved += (boxed - direct) * count
        rows.append([name, count, direct, boxed, boxed - direct])
    print(f'CondenseNetV2-{arch.upper()} deploy, input 1x3x{size}x{size}, {args.threads} '
          f'thread(s), {repeats} interleaved rounds after {warmup} warm-up; '
          f'{kernels_status()}')
    print_table('Per call, empty batch (median us)',
                ['operator', 'calls per forward', 'bindings us', 'dispatcher us',
                 'difference us'], rows)
    print(f'\ndifference over one forward\'s calls: {saved / 1e3:.2f} ms')

    def through_dispatcher():
        with mock.patch.dict(dense_layer._KERNELS, clear=True):
            return forward()

    forwards = {'bindings': forward, 'dispatcher': through_dispatcher}
    with torch.inference_mode():
        outs = {way: fn() for way, fn in forwards.items()}
    times = time_interleaved(forwards, repeats, warmup)
    print_table('Whole forward (median)', ['way', 'ms', 'x dispatcher'],
                [[way, t * 1e3, t / times['dispatcher']] for way, t in times.items()])
    ratio = times['bindings'] / times['dispatcher']
    print_table('Targets', ['check', 'ratio', 'result'],
                [['forward with the bindings <= 1.0x through the dispatcher', ratio,
                  verdict(ratio <= 1.0)]])
    equal = torch.equal(outs['bindings'], outs['dispatcher'])
    print(f'\nlogits of the two ways equal: {equal}')
    return 0 if equal else 1


if __name__ == '__main__':
    raise SystemExit(main())
