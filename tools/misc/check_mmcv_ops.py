#!/usr/bin/env python
"""Check that mmcv's compiled ops load and run: on CPU, and on CUDA when a GPU is visible.

Exits 0 when they do; otherwise prints one line saying what is wrong and exits 1. On a
machine with a visible GPU an mmcv built without CUDA ops is refused: mmdet would stop
at its first NMS with ``nms_impl: implementation for device cuda:0 not found``.

Example:
    python tools/misc/check_mmcv_ops.py            # prints e.g. "mmcv 2.1.0 ops: cpu"
    python tools/misc/check_mmcv_ops.py --expect-version 2.1.0
"""
from __future__ import annotations

import argparse
import sys


def run_ops(device: str) -> None:
    """Run nms and roi_align on ``device`` and check their results."""
    import torch
    from mmcv.ops import nms, roi_align

    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]],
                         device=device)
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=device), iou_threshold=0.5)
    if keep.tolist() != [0, 2]:
        raise RuntimeError(f'nms on {device} kept {keep.tolist()}, expected [0, 2]')
    rois = torch.tensor([[0., 0., 0., 4., 4.]], device=device)
    out = roi_align(torch.ones(1, 1, 8, 8, device=device), rois, (2, 2))
    if tuple(out.shape) != (1, 1, 2, 2) or not torch.allclose(out, torch.ones_like(out)):
        raise RuntimeError(f'roi_align on {device} gave {out.flatten().tolist()}')


def check(expect_version: str | None = None) -> str:
    """Return the devices the ops ran on (``'cpu'`` or ``'cpu, cuda'``); raise otherwise."""
    import torch
    import mmcv
    if expect_version and mmcv.__version__ != expect_version:
        raise RuntimeError(f'mmcv {mmcv.__version__} is installed, expected {expect_version}')
    run_ops('cpu')
    if not torch.cuda.is_available():
        return 'cpu'
    from mmcv.ops import get_compiling_cuda_version
    if get_compiling_cuda_version() == 'not available':
        raise RuntimeError('a GPU is visible but mmcv was built without CUDA ops: rebuild '
                           'it with tools/install_mmcv.sh on this machine (needs nvcc)')
    run_ops('cuda')
    return 'cpu, cuda'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--expect-version', help='the mmcv version that must be installed')
    args = parser.parse_args(argv)
    try:
        devices = check(args.expect_version)
    except Exception as err:  # noqa: BLE001 (import errors, ABI mismatches, wrong results)
        print(f'mmcv ops check failed: {type(err).__name__}: {err}', file=sys.stderr)
        return 1
    import mmcv
    print(f'mmcv {mmcv.__version__} ops: {devices}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
