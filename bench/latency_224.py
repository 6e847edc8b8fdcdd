#!/usr/bin/env python
"""Classifier latency at 224x224, batch 1: mmsfr deploy models vs torchvision.

Example:
    python bench/latency_224.py                 # 1 thread, 30 interleaved rounds
    python bench/latency_224.py --threads 2 --repeats 50
    python bench/latency_224.py --tuned-malloc  # glibc keeps freed memory (less noise)
    python bench/latency_224.py --size 32       # fixed per-call costs dominate
    python bench/latency_224.py --batch 8       # throughput
    python bench/latency_224.py --compile       # every model through torch.compile

Every model runs with random weights (random BN statistics, condensed to the end of
its schedule) on the same input; one table row per model with the median latency,
the ratio to torchvision MobileNetV2 measured in the same run, the conv + matmul
multiply-adds actually executed, the achieved GFLOP/s (2 flops per multiply-add) and
that speed as a share of the machine's dense GEMM speed measured in the same run
(the ceiling: the faster of torch's and onnxruntime's matrix product). Rows:

* torchvision MobileNetV2 and ShuffleNetV2 1.5x (the references of the paper), and
  for context the same ShuffleNetV2 with its conv -> BN pairs folded (mmcv's
  ``fuse_conv_bn``), as mmsfr's ShuffleNet deploy forms fold theirs;
* CondenseNetV2-A/B/C in mmsfr's deploy form (with the C++ kernels of
  ``mmsfr._ext`` when they are built), and CondenseNetV2-C's deploy form once more with
  PyTorch ops only (``MMSFR_NATIVE=0``, the path without the extension);
* CondenseNetV2-C in the reference form (``bench/reference_form.py``: grouped
  ``nn.Conv2d``, dense float scatter matrices, four-op hard-swish) and in its
  train-time (masked) form;
* SFR-ShuffleNetV2 1.5x deploy and train-time.

The SFR-ShuffleNetV2 target compares with torchvision's model as shipped. Beyond the
folded BNs, mmsfr's ShuffleNets take the stem max-pool from strided slices
(``mmsfr.models.layers.max_pool3x3s2``, several times faster than PyTorch's CPU
kernel at this size); the folded-BN torchvision row shows how much of the difference
is folding.

The targets checked at the end: CondenseNetV2-C deploy <= 1.0x MobileNetV2;
deploy >= 2x faster than the masked form; SFR-ShuffleNetV2 1.5x deploy <= 1.1x
torchvision ShuffleNetV2 1.5x. Outputs of the three CondenseNetV2-C forms are compared
(max relative difference).

``--compile``: time every model through ``torch.compile`` (TorchInductor with
``freezing``: weights become constants, conv weights are pre-packed for oneDNN and
elementwise chains are fused into generated C++ loops; a C++ compiler is needed).
The deploy CondenseNetV2 dense blocks keep mmsfr's C++ operators in the compiled graph
(``torch.ops.mmsfr.*``, writing in place into each block's buffer; see
``mmsfr.models.layers.fast_path.traced_inference``). Compiling takes tens of seconds
per model; its time is not counted. Two eager rows (MobileNetV2 and the largest
CondenseNetV2 deploy) are timed in the same run, and two more targets are checked:
the compiled CondenseNetV2 deploy is not slower than its eager run and matches it
within 1e-5.

``--tuned-malloc``: as in ``bench/detection_backbone.py``, re-run with glibc's malloc
keeping freed memory. Even at 224 the default allocator returns freed heap tops to the
system, and the page faults of the next allocation vary from run to run by tens of
percent; the first output line names the allocator used.
"""
from __future__ import annotations

import copy

import torch
import torchvision
from mmcv.cnn import fuse_conv_bn

from _common import (CDN, SFR_SN, add_malloc_arg, apply_malloc_arg, base_parser, build,
                     check_positive, condensed, deploy_copy, gemm_gflops, kernels_status,
                     macs, ops, print_table, pytorch_kernels, rel_diff, time_interleaved,
                     verdict)
from reference_form import reference_backbone


def classify(model):
    """The classifier's logits from an image batch (mmpretrain or torchvision)."""
    if hasattr(model, 'data_preprocessor'):
        return lambda x: model(x, mode='tensor')
    return model


class _Logits(torch.nn.Module):
    """An mmpretrain classifier's logits as a plain ``forward(x)`` (one graph to compile)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, mode='tensor')


def compiled(model):
    """``model``'s image -> logits function through TorchInductor, weights frozen."""
    if hasattr(model, 'data_preprocessor'):
        model = _Logits(model)
    return torch.compile(model, dynamic=False, options={'freezing': True})


class ReferenceClassifier(torch.nn.Module):
    """Reference-form backbone + the classifier's own neck and head."""

    def __init__(self, classifier) -> None:
        super().__init__()
        self.backbone = reference_backbone(classifier.backbone)
        self.neck = copy.deepcopy(classifier.neck)
        self.head = copy.deepcopy(classifier.head)

    def forward(self, x):
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        return self.head(feats)


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1)')
    parser.add_argument('--size', type=int, default=224,
                        help='input height and width (default 224; the targets are for 224)')
    parser.add_argument('--batch', type=int, default=1,
                        help='images per forward (default 1; the targets are for 1)')
    parser.add_argument('--profile', action='store_true',
                        help='also print the top ops of one CondenseNetV2 deploy forward')
    parser.add_argument('--compile', action='store_true',
                        help='time every model through torch.compile (inductor, freezing)')
    add_malloc_arg(parser)
    args = parser.parse_args(argv)
    check_positive(parser, args, 'threads', 'batch')
    if args.size < 32:
        parser.error(f'--size must be >= 32 (five stride-2 stages), got {args.size}')
    malloc = apply_malloc_arg(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = 64 if args.quick else args.size
    batch = args.batch
    repeats, warmup = (1, 0) if args.quick else (args.repeats, args.warmup)
    archs = ('a',) if args.quick else ('a', 'b', 'c')

    models = {
        'torchvision MobileNetV2': torchvision.models.mobilenet_v2().eval(),
        'torchvision ShuffleNetV2 1.5x': torchvision.models.shufflenet_v2_x1_5().eval(),
    }
    models['torchvision ShuffleNetV2 1.5x BN folded'] = fuse_conv_bn(
        copy.deepcopy(models['torchvision ShuffleNetV2 1.5x']))
    last = archs[-1].upper()
    for arch in archs:
        masked = condensed(build(CDN.format(arch)))
        models[f'CondenseNetV2-{arch.upper()} deploy'] = deploy_copy(masked)
    dep = f'CondenseNetV2-{last} deploy'
    plain = f'{dep}, PyTorch ops'
    if ops.native_enabled() and not args.compile:  # compiled, both rows would be one
        models[plain] = models[dep]  # the same model, run with the kernels switched off
    models[f'CondenseNetV2-{last} reference form'] = ReferenceClassifier(
        models[f'CondenseNetV2-{last} deploy']).eval()
    models[f'CondenseNetV2-{last} masked'] = masked
    sfr_masked = condensed(build(SFR_SN))
    models['SFR-ShuffleNetV2 1.5x deploy'] = deploy_copy(sfr_masked)
    models['SFR-ShuffleNetV2 1.5x masked'] = sfr_masked

    x = torch.rand(batch, 3, size, size)
    runners = {name: classify(m) for name, m in models.items()}
    if plain in runners:
        runners[plain] = pytorch_kernels(runners[plain])
    if args.compile:
        eager = {f'{name} (eager)': (models[name], runners[name])
                 for name in ('torchvision MobileNetV2', f'CondenseNetV2-{last} deploy')}
        runners = {name: compiled(m) for name, m in models.items()}
        for name, (model, runner) in eager.items():  # context rows, same run
            models[name], runners[name] = model, runner
    fns = {name: (lambda f=f: f(x)) for name, f in runners.items()}
    with torch.inference_mode():
        outs = {name: fn() for name, fn in fns.items()}
    ceiling = gemm_gflops(args.threads, size=256 if args.quick else 1024)
    times = time_interleaved(fns, repeats, warmup)
    base = times['torchvision MobileNetV2']
    rows = []
    for name, model in models.items():
        n_macs = macs(model, (batch, 3, size, size), forward=lambda m, t: classify(m)(t))
        gflops = 2 * n_macs / times[name] / 1e9
        rows.append([name, n_macs / 1e6, times[name] * 1e3, times[name] / base, gflops,
                     f'{100 * gflops / ceiling:.0f}%'])
    print(f'input {batch}x3x{size}x{size}, {args.threads} thread(s), {repeats} interleaved '
          f'rounds after {warmup} warm-up; dense GEMM ceiling {ceiling:.1f} GFLOP/s; '
          f'allocator: {malloc}; deploy CondenseNetV2 layers: {kernels_status()}'
          + ('; torch.compile (inductor, freezing) for every row but the (eager) ones'
             if args.compile else ''))
    print_table('Latency (median)', ['model', 'MMACs', 'ms', 'x MobileNetV2', 'GFLOP/s',
                                     'of GEMM'], rows)

    ref, msk = (f'CondenseNetV2-{last} {f}' for f in ('reference form', 'masked'))
    checks = [
        (f'{dep} <= 1.0x MobileNetV2', times[dep] / base, times[dep] <= base),
        (f'{dep} >= 2x faster than masked', times[msk] / times[dep],
         times[msk] >= 2 * times[dep]),
        ('SFR-ShuffleNetV2 1.5x deploy <= 1.1x torchvision 1.5x',
         times['SFR-ShuffleNetV2 1.5x deploy'] / times['torchvision ShuffleNetV2 1.5x'],
         times['SFR-ShuffleNetV2 1.5x deploy']
         <= 1.1 * times['torchvision ShuffleNetV2 1.5x']),
        (f'{dep} vs reference form (speed-up)', times[ref] / times[dep], True),
    ]
    if args.compile:
        eager_dep = f'{dep} (eager)'
        checks.append((f'{dep} compiled <= 1.0x eager', times[dep] / times[eager_dep],
                       times[dep] <= times[eager_dep]))
    print_table('Targets', ['check', 'ratio', 'result'],
                [[c, r, verdict(ok) if 'speed-up' not in c else '-'] for c, r, ok in checks])
    diffs = [[f'{dep} vs {other}', f'{rel_diff(outs[dep], outs[other]):.1e}']
             for other in (ref, msk, plain, f'{dep} (eager)') if other in outs]
    diffs.append(['SFR-ShuffleNetV2 1.5x deploy vs masked',
                  f"{rel_diff(outs['SFR-ShuffleNetV2 1.5x deploy'], outs['SFR-ShuffleNetV2 1.5x masked']):.1e}"])
    print_table('Exactness (max |diff| / max |logit|)', ['outputs', 'rel. diff'], diffs)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            fns[dep]()
        calls = sum(e.cpu_parent is None and e.name.startswith('aten::') for e in prof.events())
        print(f'\nProfile of one {dep} forward ({calls} top-level aten calls)\n')
        print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15))
    worst = max(float(d[1]) for d in diffs)
    if worst > 1e-5:
        print(f'ERROR: deploy outputs differ by {worst:.1e} (> 1e-5)')
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
