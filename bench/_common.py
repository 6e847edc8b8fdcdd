"""Shared pieces of the benchmark scripts: timing, the GEMM ceiling, models, tables.

Timing policy: every candidate of a table is timed in the same process, interleaved
round-robin (one call of each per round), so a background load slows them alike and
the ratios stay meaningful; the median over rounds is reported. Absolute milliseconds
on a shared machine are noise; the ratio columns are the result.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/<name>.py` from anywhere
    sys.path.insert(0, str(REPO))

import mmsfr  # noqa: E402,F401  (registers the models)
from mmsfr.analysis import count_complexity  # noqa: E402
from mmsfr.apis import init_model  # noqa: E402
from mmsfr import ops  # noqa: E402
from mmsfr.models.layers import condense_model, convert_to_deploy  # noqa: E402
from mmsfr.testing import randomise_bn, rel_diff  # noqa: E402,F401  (rel_diff: for the scripts)


#: The configs of the CondenseNetV2 classifiers, by arch (``CDN.format('c')``).
CDN = 'configs/pretrain/condensenetv2/condensenetv2-{}_8xb128_in1k.py'
#: The config of the SFR-ShuffleNetV2 1.5x classifier.
SFR_SN = 'configs/pretrain/shufflenetv2/sfr-shufflenetv2-x1_5_8xb128_in1k.py'


def base_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every benchmark takes (``--quick`` is the CI smoke mode)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=30,
                        help='timed rounds; the median is reported (default 30)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed rounds (default 5)')
    parser.add_argument('--quick', action='store_true',
                        help='smoke mode: tiny inputs and 1 round, checks only that it runs')
    return parser


#: glibc malloc keeping freed memory instead of unmapping it (thresholds of 4 / 16 GiB).
TUNED_MALLOC = 'glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184'

MALLOC_HELP = ('re-run with GLIBC_TUNABLES telling glibc malloc to keep freed memory: '
               'by default large tensors are fresh mmaps (and freed heap tops are trimmed), '
               'whose pages fault in on first touch; every model of the run gets the same '
               'setting')


def add_malloc_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--tuned-malloc`` (see :func:`apply_malloc_arg`)."""
    parser.add_argument('--tuned-malloc', action='store_true', help=MALLOC_HELP)


def apply_malloc_arg(args: argparse.Namespace) -> str:
    """Re-execute the script under :data:`TUNED_MALLOC` if ``--tuned-malloc`` asks for it
    (glibc reads the setting only at start-up); return the allocator in use, for the
    report."""
    if args.tuned_malloc and os.environ.get('GLIBC_TUNABLES') != TUNED_MALLOC:
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  dict(os.environ, GLIBC_TUNABLES=TUNED_MALLOC))
    return os.environ.get('GLIBC_TUNABLES') or 'default glibc malloc'


def check_positive(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   *names: str) -> None:
    for name in ('repeats', *names):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')


def add_kernel_model_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--arch`` and ``--threads`` (see :func:`kernel_model`)."""
    parser.add_argument('--arch', default='c', choices=('a', 'b', 'c'),
                        help='CondenseNetV2 arch (default c)')
    parser.add_argument('--threads', type=int, default=1, help='threads (default 1)')


class KernelModel(NamedTuple):
    """A deploy CondenseNetV2 for a script that times mmsfr's kernels, and its run."""
    model: nn.Module
    arch: str
    size: int
    repeats: int
    warmup: int


def kernel_model(args: argparse.Namespace, reason: str) -> KernelModel | None:
    """The deploy CondenseNetV2 (random weights, condensed) of ``--arch`` at 224, or A
    at 64 with one round in ``--quick`` mode, with torch set to ``--threads`` and seed
    0; None, after printing why (``reason``), when the C++ kernels are not in use."""
    if not ops.native_enabled():
        print(f'deploy CondenseNetV2 layers: {kernels_status()}: {reason}')
        return None
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arch, size = ('a', 64) if args.quick else (args.arch, 224)
    repeats, warmup = (1, 0) if args.quick else (args.repeats, args.warmup)
    model = deploy_copy(condensed(build(CDN.format(arch))))
    return KernelModel(model, arch, size, repeats, warmup)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     *, autograd: bool = False,
                     before_each: Callable[[], object] | None = None) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin.

    Runs under ``torch.inference_mode`` unless ``autograd`` (training steps);
    ``before_each`` (e.g. evicting the caches) runs untimed before every timed call.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.enable_grad() if autograd else torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                if before_each is not None:
                    before_each()
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def kernels_status() -> str:
    """Which kernels the deploy CondenseNetV2 layers run, for the reports."""
    if not ops.native_enabled():
        return ('PyTorch ops (C++ kernels switched off by MMSFR_NATIVE=0)'
                if ops.native_available() else f'PyTorch ops (mmsfr._ext {ops.STATUS})')
    names = {'avx512': 'AVX-512', 'avx2': 'AVX2 + FMA', 'generic': 'generic'}
    return f'mmsfr._ext C++ kernels ({names[ops.isa()]})'


def pytorch_kernels(fn: Callable[..., object]) -> Callable[..., object]:
    """``fn`` run with mmsfr's C++ kernels switched off (the PyTorch path)."""
    def run(*args, **kwargs):
        with ops.native_kernels(False):
            return fn(*args, **kwargs)
    return run


def gemm_gflops(threads: int, size: int = 1024, repeats: int = 10) -> float:
    """The machine's dense fp32 GEMM speed (GFLOP/s, 2 flops per multiply-add): the
    faster of torch's matrix product and onnxruntime's ``MatMul`` (when onnxruntime is
    installed) of two ``size`` x ``size`` matrices on ``threads`` threads. The two
    libraries' kernels differ by up to 2x on some CPUs (e.g. with AVX-512), so the
    faster one is the ceiling."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.rand(size, size), torch.rand(size, size)
        best = time_interleaved({'mm': lambda: a @ b}, repeats, 2)['mm']
    finally:
        torch.set_num_threads(previous)
    try:
        best = min(best, _ort_matmul_seconds(threads, size, repeats))
    except ImportError:
        pass
    return 2 * size**3 / best / 1e9


def _ort_matmul_seconds(threads: int, size: int, repeats: int) -> float:
    """Median seconds of onnxruntime's CPU ``MatMul`` of two ``size`` x ``size`` float32
    matrices (a one-node graph) on ``threads`` threads."""
    import numpy as np
    from onnx import TensorProto, helper

    from mmsfr.deployment._onnx import cpu_session  # ImportError without onnxruntime
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, (size, size))
             for n in ('a', 'b', 'c')]
    graph = helper.make_graph([helper.make_node('MatMul', ['a', 'b'], ['c'])], 'gemm',
                              value[:2], value[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    session = cpu_session(model.SerializeToString(), threads)
    feed = {n: np.random.rand(size, size).astype(np.float32) for n in ('a', 'b')}
    return time_interleaved({'mm': lambda: session.run(None, feed)}, repeats, 2)['mm']


def macs(model: nn.Module, shape: Sequence[int],
         forward: Callable[[nn.Module, torch.Tensor], object] | None = None) -> int:
    """Conv + matmul multiply-adds of one forward at ``shape`` = (N, C, H, W)."""
    return count_complexity(model, shape, forward=forward,
                            as_deploy=False)['conv_linear_macs']


def condensed(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with random BN statistics, condensed to the end of its schedule."""
    randomise_bn(model, seed)
    condense_model(model, 1.0)
    return model.eval()


def deploy_copy(model: nn.Module) -> nn.Module:
    """A deploy-form copy of a condensed train-time model."""
    return convert_to_deploy(copy.deepcopy(model)).eval()


def build(config: str) -> nn.Module:
    """Model of a config (a path or the name of a config shipped with mmsfr) with random
    weights, in eval mode (:func:`mmsfr.apis.init_model`)."""
    return init_model(config)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a markdown table (so it can be pasted into the README as is)."""
    print(f'\n{title}\n')
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print('| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths)) + ' |')
        if i == 0:
            print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f'{value:.2f}' if abs(value) < 100 else f'{value:.0f}'
    return str(value)


def verdict(ok: bool) -> str:
    return 'met' if ok else 'NOT met'
