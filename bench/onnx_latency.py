#!/usr/bin/env python
"""Classifier latency in onnxruntime and eager PyTorch: mmsfr deploy models vs torchvision.

Example:
    python bench/onnx_latency.py              # 224: batch 1 / 1 thread, 1 / 2, 8 / 1
    python bench/onnx_latency.py --threads 2  # only batch 1, 2 threads
    python bench/onnx_latency.py --batch 8    # only batch 8, 1 thread
    python bench/onnx_latency.py --batch 8 --tuned-malloc  # glibc keeps freed memory
    python bench/onnx_latency.py --quick      # CI smoke mode: 64x64, 1 round

Every model runs with random weights on the same input: torchvision MobileNetV2,
MobileNetV3-Large and ShuffleNetV2 1.5x (eval mode), and mmsfr's CondenseNetV2-A/B/C
and SFR-ShuffleNetV2 1.5x classifiers (random BN statistics, condensed to the end of
their schedule, then converted to the deploy form, as in ``bench/latency_224.py``).
Three more onnxruntime rows, CondenseNetV2-C (A with ``--quick``) exported with one
setting of ``export_dynamic`` changed, measure what the default export's forms gain:
every SFR as ``ScatterND`` rounds (``dense_sfr_max_growth=0``; the default writes 1x1
SFRs with at most 64 new channels as dense products), every grouped 3x3 conv as one
grouped ``Conv`` (``depthwise_max_out=0``; the default writes those with at most 4
outputs per group as depthwise passes + ``ReduceSum``), and depthwise passes for
groups of up to 8 outputs (``depthwise_max_out=8``), the next limit up: together
they show whether the default limit is the fastest on the machine at hand.

One ONNX graph per model and batch size, every input dim fixed, all from torch's
``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``, opset 18, its
graph optimisations on): a torchvision model exported directly at the batch's input
shape; an mmsfr classifier (``image -> logits``, ``ExportModule``) as
``tools/deployment/export_onnx.py`` writes it, i.e. exported once with a symbolic
batch and size by ``mmsfr.deployment.export_dynamic`` (which also splits the SFR's
scatter-adds) and then fixed to each batch size and the input size (``specialise``).
Both ways give the same graph for a torchvision model (same ops; the direct export
is faster).

Settings (batch, threads): (1, 1), (1, 2) and (8, 1); ``--batch`` and / or
``--threads`` select a single one. Per setting, every model's graph in onnxruntime
(CPU execution provider, all graph optimisations, ``threads`` intra-op threads) and
its eager PyTorch forward (``torch.set_num_threads(threads)``, inference mode, with
mmsfr's C++ operators when they are built) are timed in this one process,
interleaved round-robin; the medians are reported. One table per setting, one row
per model: the conv + matmul multiply-adds, both latencies, each as a ratio to
torchvision MobileNetV2 in onnxruntime measured in the same run, and the
onnxruntime speed in GFLOP/s (2 flops per multiply-add) and as a share of the
machine's dense GEMM speed with as many threads (the ceiling: the faster of torch's
and onnxruntime's fp32 1024x1024 matrix products, measured in the same run).

The onnxruntime graphs are timed first, then the eager models, each group interleaved
round-robin: two thread pools alternating call by call compete for the cores. With
more than one thread, each onnxruntime session is timed alone, one after the other
(its workers spin after a run, taking the cores from the next session's). The
2-thread setting needs a machine with two idle cores.

The targets checked at the end, on the batch-1, 1-thread setting: CondenseNetV2-C
deploy in onnxruntime <= 1.0x MobileNetV2 in onnxruntime; CondenseNetV2-C deploy
eager (mmsfr) <= 1.0x MobileNetV2 in onnxruntime; SFR-ShuffleNetV2 1.5x in
onnxruntime <= 1.0x torchvision ShuffleNetV2 1.5x in onnxruntime. The other settings
are reported without targets, and the exit code does not depend on them. Every
graph's output is compared with its PyTorch model's (max relative difference,
<= 1e-4, else exit code 1), next to its node count.

``--tuned-malloc``: as in ``bench/latency_224.py``, re-run with glibc's malloc keeping
freed memory. onnxruntime keeps its own arena, but an eager forward gets its large
tensors from glibc: by default fresh mmaps, whose pages fault in on every forward. At
batch 8 those faults can take more time than the eager models' arithmetic, and how
much varies from run to run; the first output line names the allocator used.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch
import torchvision
from torch import nn

from _common import (CDN, SFR_SN, add_malloc_arg, apply_malloc_arg, base_parser, build,
                     check_positive, condensed, deploy_copy, gemm_gflops, kernels_status,
                     macs, print_table, rel_diff, time_interleaved, verdict)
from mmsfr.deployment import ExportModule, export_dynamic, onnx_op_counts, specialise
from mmsfr.deployment._onnx import cpu_session, onnx, ort

OPSET = 18
BASE = 'torchvision MobileNetV2'
TV_SN = 'torchvision ShuffleNetV2 1.5x'
SFR = 'SFR-ShuffleNetV2 1.5x deploy'
#: (batch, threads) of a default run; the targets are checked on the first.
SETTINGS = ((1, 1), (1, 2), (8, 1))
RTOL = 1e-4
#: Rows of the last CondenseNetV2 exported with one ``export_dynamic`` setting changed,
#: beside the default export: by name suffix, that setting.
VARIANTS: dict[str, dict[str, int]] = {
    ', SFR as ScatterND rounds': dict(dense_sfr_max_growth=0),
    ', 3x3 convs as grouped Conv': dict(depthwise_max_out=0),
    ', depthwise passes up to 8 outputs': dict(depthwise_max_out=8),
}


def settings(batch: int | None, threads: int | None, quick: bool) -> list[tuple[int, int]]:
    """The (batch, threads) settings to time: one if ``--batch`` / ``--threads`` (or
    ``--quick``) is given, else :data:`SETTINGS`."""
    if quick or batch is not None or threads is not None:
        return [(batch or 1, threads or 1)]
    return list(SETTINGS)


def build_models(archs: Sequence[str]) -> dict[str, nn.Module]:
    """The eval-mode models, by table name (mmsfr classifiers as ``image -> logits``)."""
    models: dict[str, nn.Module] = {
        BASE: torchvision.models.mobilenet_v2().eval(),
        'torchvision MobileNetV3-Large': torchvision.models.mobilenet_v3_large().eval(),
        TV_SN: torchvision.models.shufflenet_v2_x1_5().eval(),
    }
    for arch in archs:
        models[f'CondenseNetV2-{arch.upper()} deploy'] = ExportModule(
            deploy_copy(condensed(build(CDN.format(arch))))).eval()
    last = f'CondenseNetV2-{archs[-1].upper()} deploy'
    for suffix in VARIANTS:  # the same model, exported another way
        models[f'{last}{suffix}'] = models[last]
    models[SFR] = ExportModule(deploy_copy(condensed(build(SFR_SN)))).eval()
    return models


def export_graphs(models: dict[str, nn.Module], size: int, batches: Sequence[int],
                  folder: Path) -> dict[tuple[str, int], Path]:
    """Write one fixed-shape graph per model and batch size into ``folder``: torchvision
    models exported directly, mmsfr's through ``export_dynamic`` + ``specialise``.

    Returns:
        The paths by (model name, batch).
    """
    paths = {}
    for i, (name, model) in enumerate(models.items()):
        changed = next((v for suffix, v in VARIANTS.items() if name.endswith(suffix)), {})
        dynamic = (export_dynamic(model, (size, size), OPSET, **changed)
                   if isinstance(model, ExportModule) else None)
        for batch in batches:
            path = paths[name, batch] = folder / f'model{i}_b{batch}.onnx'
            if dynamic is not None:
                onnx.save_model(specialise(dynamic, batch, (size, size)), str(path))
            else:
                torch.onnx.export(model, (torch.rand(batch, 3, size, size), ), str(path),
                                  dynamo=True, opset_version=OPSET, input_names=['input'],
                                  external_data=False, verbose=False)
    return paths


def node_count(path: Path) -> int:
    """Number of nodes of the ONNX graph at ``path``."""
    return sum(onnx_op_counts(path).values())


def time_setting(models: dict[str, nn.Module], paths: dict[tuple[str, int], Path],
                 x: torch.Tensor, threads: int, repeats: int,
                 warmup: int) -> tuple[dict[str, float], dict[str, float]]:
    """Time every model in onnxruntime and eager PyTorch, interleaved round-robin, on
    ``x`` with ``threads`` threads.

    Returns:
        The median seconds per call by ``'<model>, onnxruntime'`` /
        ``'<model>, eager'``, and each model's onnxruntime vs PyTorch relative
        difference.
    """
    torch.set_num_threads(threads)
    batch = x.shape[0]
    runtime: dict[str, Callable[[], object]] = {}
    eager: dict[str, Callable[[], object]] = {}
    diffs = {}
    for name, model in models.items():
        sess = cpu_session(paths[name, batch], threads)
        feed = {sess.get_inputs()[0].name: x.numpy()}
        with torch.inference_mode():
            expected = model(x)
        diffs[name] = rel_diff(torch.from_numpy(sess.run(None, feed)[0]), expected)
        runtime[f'{name}, onnxruntime'] = lambda s=sess, f=feed: s.run(None, f)
        if not name.endswith(tuple(VARIANTS)):  # its eager forward is the default's
            eager[f'{name}, eager'] = lambda m=model: m(x)
    # One runtime at a time: two thread pools alternating call by call compete for the
    # cores. With several threads, each onnxruntime session's workers spin for a while
    # after a run, so the sessions are timed one after the other, each alone.
    if threads == 1:
        times = time_interleaved(runtime, repeats, warmup)
    else:
        times = {name: time_interleaved({name: fn}, repeats, warmup)[name]
                 for name, fn in runtime.items()}
    return {**times, **time_interleaved(eager, repeats, warmup)}, diffs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit code 1 if a graph does not reproduce its model."""
    parser = base_parser(__doc__)
    parser.add_argument('--threads', type=int, default=None,
                        help='only this many onnxruntime and torch threads (batch 1 unless '
                             '--batch; default: the three settings)')
    parser.add_argument('--batch', type=int, default=None,
                        help='only this batch size (1 thread unless --threads; default: the '
                             'three settings)')
    parser.add_argument('--size', type=int, default=224,
                        help='input height and width (default 224; the targets are for 224)')
    add_malloc_arg(parser)
    args = parser.parse_args(argv)
    check_positive(parser, args, *(n for n in ('threads', 'batch')
                                   if getattr(args, n) is not None))
    if args.size < 32:
        parser.error(f'--size must be >= 32 (five stride-2 stages), got {args.size}')
    malloc = apply_malloc_arg(args)
    torch.set_num_threads(1)  # building, condensing and exporting (each setting sets its own)
    torch.manual_seed(0)
    size = 64 if args.quick else args.size
    repeats, warmup = (1, 0) if args.quick else (args.repeats, args.warmup)
    archs = ('a',) if args.quick else ('a', 'b', 'c')
    last = f'CondenseNetV2-{archs[-1].upper()} deploy'
    runs = settings(args.batch, args.threads, args.quick)

    models = build_models(archs)
    gemm = 256 if args.quick else 1024
    ceilings = {t: gemm_gflops(t, size=gemm) for t in sorted({t for _, t in runs})}
    print(f'input Nx3x{size}x{size}, {repeats} interleaved rounds after {warmup} warm-up; '
          f'onnxruntime {ort.__version__} (CPU execution provider), torch '
          f'{torch.__version__}; graphs: torch.onnx.export(dynamo=True), opset {OPSET}, '
          f'fixed shapes; allocator: {malloc}; deploy CondenseNetV2 layers in PyTorch: '
          f'{kernels_status()}')
    results, worst = {}, {name: 0.0 for name in models}
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_graphs(models, size, sorted({b for b, _ in runs}), Path(tmp))
        nodes = {name: node_count(paths[name, runs[0][0]]) for name in models}
        for batch, threads in runs:
            x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
            times, diffs = time_setting(models, paths, x, threads, repeats, warmup)
            results[batch, threads] = times
            worst = {name: max(worst[name], diffs[name]) for name in models}
            base = times[f'{BASE}, onnxruntime']
            rows = []
            for name, model in models.items():
                n_macs = macs(model, (batch, 3, size, size))
                t_ort, t_eager = times[f'{name}, onnxruntime'], times.get(f'{name}, eager')
                gflops = 2 * n_macs / t_ort / 1e9
                rows.append([name, n_macs / 1e6, t_ort * 1e3,
                             '-' if t_eager is None else t_eager * 1e3, t_ort / base,
                             '-' if t_eager is None else t_eager / base, gflops,
                             f'{100 * gflops / ceilings[threads]:.0f}%'])
            print_table(f'Batch {batch}, {threads} thread(s): latency (median); dense GEMM '
                        f'ceiling {ceilings[threads]:.1f} GFLOP/s',
                        ['model', 'MMACs', 'onnxruntime ms', 'eager ms',
                         'onnxruntime x MobileNetV2 onnxruntime',
                         'eager x MobileNetV2 onnxruntime', 'onnxruntime GFLOP/s',
                         'of GEMM'], rows)

    if (1, 1) in results:
        times = results[1, 1]
        base = times[f'{BASE}, onnxruntime']
        dep_ort, dep_eager = times[f'{last}, onnxruntime'], times[f'{last}, eager']
        sfr, tv = times[f'{SFR}, onnxruntime'], times[f'{TV_SN}, onnxruntime']
        checks = [
            (f'{last} onnxruntime <= 1.0x MobileNetV2 onnxruntime', dep_ort / base,
             dep_ort <= base),
            (f'{last} eager (mmsfr) <= 1.0x MobileNetV2 onnxruntime', dep_eager / base,
             dep_eager <= base),
            (f'{SFR} onnxruntime <= 1.0x {TV_SN} onnxruntime', sfr / tv, sfr <= tv),
        ]
        print_table(f'Targets (batch 1, 1 thread, {size}x{size})', ['check', 'ratio', 'result'],
                    [[c, r, verdict(ok)] for c, r, ok in checks])
    else:
        print('\nTargets: not checked (they are for batch 1, 1 thread)')
    print_table('Exactness: onnxruntime vs PyTorch (max |diff| / max |logit|, worst setting)',
                ['model', 'ONNX nodes', 'rel. diff'],
                [[name, nodes[name], f'{worst[name]:.1e}'] for name in models])
    bad = {name: d for name, d in worst.items() if d > RTOL}
    if bad:
        print(f'ERROR: onnxruntime differs from PyTorch by more than {RTOL:g}: '
              + ', '.join(f'{name} {d:.1e}' for name, d in bad.items()))
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
