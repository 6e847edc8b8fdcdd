#!/usr/bin/env python
"""Cost of learning the sparse connections: masked vs plain training steps.

Example:
    python bench/condensation_overhead.py                 # batch 8 x 224, 2 threads
    python bench/condensation_overhead.py --arch a --batch-size 16

A training step (forward, cross-entropy, backward, SGD update) of the train-time
CondenseNetV2 classifier, whose LGC/SFR layers multiply their weights by 0/1 masks
and call the condensation schedule every iteration (as ``CondensationHook`` does), is
timed interleaved with the same network, same weights, whose layers use their dense
weights directly (no masks, no schedule). Target: masked <= 1.3x plain.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from _common import (base_parser, build, check_positive, print_table, time_interleaved,
                     verdict)
from mmsfr.models.layers import condense_model, condensing_layers

CONFIG = 'configs/pretrain/condensenetv2/condensenetv2-{}_8xb128_in1k.py'


def unmasked(model: nn.Module) -> nn.Module:
    """A copy whose LGC/SFR layers run their dense weights (the no-mask baseline)."""
    twin = copy.deepcopy(model)
    for _, layer in condensing_layers(twin):
        layer.masked_weight = lambda layer=layer: layer.conv.weight  # instance override
    return twin


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               optim: torch.optim.Optimizer, condense: bool):
    def step() -> None:
        if condense:
            condense_model(model, 0.3)  # mid-schedule: the per-iteration check
        optim.zero_grad(set_to_none=True)
        logits = model(x, mode='tensor')
        nn.functional.cross_entropy(logits, y).backward()
        optim.step()
    return step


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    parser.set_defaults(repeats=10, warmup=2)
    parser.add_argument('--arch', default='c', choices=('a', 'b', 'c'),
                        help='CondenseNetV2 arch (default c)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--size', type=int, default=224, help='image side (default 224)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    args = parser.parse_args(argv)
    check_positive(parser, args, 'batch_size', 'size', 'threads')
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arch = 'a' if args.quick else args.arch
    batch, size = (2, 64) if args.quick else (args.batch_size, args.size)
    repeats, warmup = (1, 0) if args.quick else (args.repeats, args.warmup)

    masked = build(CONFIG.format(arch)).train()
    condense_model(masked, 0.3)  # some masks already pruned
    plain = unmasked(masked)
    x, y = torch.rand(batch, 3, size, size), torch.randint(0, 1000, (batch,))
    steps = {}
    for name, model, condense in (('masked (train-time LGC/SFR)', masked, True),
                                  ('plain (same net, no masks)', plain, False)):
        optim = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        steps[name] = train_step(model, x, y, optim, condense)
    times = time_interleaved(steps, repeats, warmup, autograd=True)
    base = times['plain (same net, no masks)']
    print(f'CondenseNetV2-{arch.upper()} training step, batch {batch} x 3 x {size} x {size}, '
          f'{args.threads} thread(s), {repeats} interleaved rounds after {warmup} warm-up')
    print_table('Training step (median)', ['variant', 's', 'x plain'],
                [[n, t, t / base] for n, t in times.items()])
    ratio = times['masked (train-time LGC/SFR)'] / base
    print_table('Targets', ['check', 'ratio', 'result'],
                [['masked step <= 1.3x plain', ratio, verdict(ratio <= 1.3)]])
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
