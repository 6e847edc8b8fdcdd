#!/usr/bin/env python
"""Evaluate an exported detector in onnxruntime on its config's test set (COCO mAP).

Runs MODEL (a whole single-stage detector exported by tools/deployment/export_onnx.py
from CONFIG, e.g. RetinaNet) in onnxruntime (CPU execution provider) over the
config's test dataloader, applies mmdet's own post-processing to its outputs (the
head's predict_by_feat: anchor decoding, score threshold, NMS, rescaling to the
original image) and evaluates with the config's test_evaluator: the same COCO bbox
table tools/test.py prints for the PyTorch model. The data pipeline and the
data_preprocessor (normalisation, padding) are those of CONFIG; the graph must take
the padded sizes it produces (export with --dynamic-size unless every image pads to
the exported --shape).
"""
from __future__ import annotations

import argparse
import json
import sys

from mmengine.config import DictAction

import mmsfr  # noqa: F401  (registers every mmsfr model)
from mmsfr.utils.cli import UserError, add_debug_arg, tool_main

EPILOG = """examples:
  python tools/deployment/export_onnx.py configs/retinanet_condensenetv2_c.py \\
      work_dirs/retinanet_condensenetv2_c/epoch_12.pth retinanet.onnx \\
      --shape 800 1344 --dynamic-size
  python tools/deployment/test_onnx.py configs/retinanet_condensenetv2_c.py retinanet.onnx
  python tools/deployment/test_onnx.py configs/demo/retinanet_condensenetv2_demo.py \\
      demo.onnx --threads 2 --out metrics.json
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='the detector config MODEL was exported from (a path, '
                        'or the name of a config shipped with mmsfr)')
    parser.add_argument('model', help='the exported .onnx file of the whole detector')
    parser.add_argument('--threads', type=int, default=None,
                        help="onnxruntime intra-op threads (default: onnxruntime's)")
    parser.add_argument('--out', help='also write the metrics to this .json file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. the data root)')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    if args.out is not None and not args.out.endswith('.json'):
        parser.error(f'--out writes JSON: give a .json file, got {args.out!r}')
    return args


@tool_main
def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code."""
    args = parse_args(argv)
    from pathlib import Path

    from mmsfr.checkpoint import atomic_output, check_output
    from mmsfr.deployment.evaluate import evaluate_onnx_detector

    if not Path(args.model).is_file():
        raise UserError(f'ONNX model not found: {args.model} (check the path)')
    if args.out:
        check_output(args.out, args.model, args.config)
    metrics = evaluate_onnx_detector(args.config, args.model, threads=args.threads,
                                     cfg_options=args.cfg_options,
                                     log=lambda m: print(m, flush=True))
    for name, value in metrics.items():
        print(f'{name}: {value}')
    if args.out:
        with atomic_output(args.out, args.model, args.config) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2))
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
