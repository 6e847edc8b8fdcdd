#!/usr/bin/env python
"""Export the deploy form of an mmsfr classifier, detector or backbone to ONNX, verified.

Loads CHECKPOINT into the model CONFIG builds and writes OUT, one self-contained
.onnx file, after checking it:

* onnx.checker (full check, with shape inference);
* onnxruntime (CPUExecutionProvider) against the PyTorch eval model on random inputs,
  at batch sizes 1 and 2 and at two input sizes (--shape and a larger non-square
  one), max|onnxruntime - torch| / max|torch| <= --rtol (1e-4) for every output.

The model is exported once with a symbolic batch, height and width (torch's dynamo
exporter; an SFR's scatter-add becomes one dense MatMul + Add for a 1x1 SFR with at
most 64 new channels, else a chain of ScatterND with unique indices, which
onnxruntime's multi-threaded ScatterND needs to add repeated indices correctly); that
graph is what runs at the two batch sizes and input sizes. OUT is
the same graph with the dims that are not requested dynamic fixed to --batch-size and
--shape, its shape arithmetic constant-folded, and is checked again at the shapes it
accepts. A table of every comparison is printed. If any check fails, OUT is not
written (an existing OUT stays as it was).

What is exported:

* classifier config (mmpretrain): image -> logits (no softmax);
  with --backbone-only: image -> the backbone's features, one output feat<i> per
  level i of its out_indices;
* single-stage detector config (mmdet, e.g. RetinaNet): backbone, neck and head
  (mmdet's mode='tensor'), image -> cls_score<l>, bbox_pred<l> per level l; the
  post-processing (decoding, NMS) is not in the graph: tools/deployment/test_onnx.py
  applies mmdet's to the onnxruntime outputs and prints the COCO table;
* two-stage detector config (Faster R-CNN): its first stage, backbone, neck and RPN
  head, image -> feat<l>, rpn_cls_score<l>, rpn_bbox_pred<l>; proposals, RoIAlign and
  the RoI head run after the graph (docs/deployment.md);
* with --backbone-only, a detector's backbone, image -> feat<i>, from a detector or a
  classifier checkpoint (its backbone.* weights are loaded).

The graph input 'input' is the network input, i.e. the image after the config's
data_preprocessor (mean/std, channel order); that step is not in the graph.

Only the deploy form exports: a train-time (masked) checkpoint is refused; convert it
with tools/convert_to_deploy.py and export it with the *_deploy_* config. ShuffleNetV2
and ShuffleNetV2+ have nothing to convert: their one config is deploy-ready.
"""
from __future__ import annotations

import argparse
import sys

from mmengine.config import DictAction

import mmsfr  # noqa: F401  (registers every mmsfr model)
from mmsfr.checkpoint import check_output
from mmsfr.utils.cli import UserError, add_debug_arg, not_written, one_line, tool_main
from mmsfr.utils.tool_setup import add_shape_arg, check_input_size, parse_shape

EPILOG = """examples:
  python tools/deployment/export_onnx.py \\
      configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py \\
      checkpoints/condensenetv2_a_deploy_in1k.pth condensenetv2_a.onnx
  python tools/deployment/export_onnx.py \\
      configs/pretrain/shufflenetv2/sfr-shufflenetv2-x1_0_deploy_in1k.py \\
      checkpoints/sfr-shufflenetv2-x1_0_deploy_in1k.pth sfr_shufflenetv2_backbone.onnx \\
      --backbone-only --dynamic-batch
  python tools/deployment/export_onnx.py configs/retinanet_condensenetv2_c.py \\
      work_dirs/retinanet_condensenetv2_c/epoch_12.pth retinanet.onnx \\
      --shape 800 1344 --dynamic-size
  python tools/deployment/export_onnx.py configs/retinanet_condensenetv2_c.py \\
      work_dirs/retinanet_condensenetv2_c/epoch_12.pth backbone.onnx --shape 800 1344 \\
      --backbone-only

A train-time checkpoint is converted first:
  python tools/convert_to_deploy.py \\
      configs/pretrain/condensenetv2/condensenetv2-c_8xb128_in1k.py \\
      work_dirs/condensenetv2-c_8xb128_in1k/epoch_350.pth \\
      checkpoints/condensenetv2_c_deploy_in1k.pth
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    from mmsfr.deployment import DEFAULT_OPSET, DEFAULT_RTOL

    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='classifier (mmpretrain) or detector (mmdet) config '
                        'of the deploy form (a path, or the name of a config shipped with '
                        'mmsfr)')
    parser.add_argument('checkpoint', help='deploy-form checkpoint (path or URL)')
    parser.add_argument('out', help='output .onnx file (never the checkpoint)')
    add_shape_arg(parser, help='input size: H (square) or H W (default: 224)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='fixed batch size of the graph (default: 1)')
    parser.add_argument('--dynamic-batch', action='store_true',
                        help="symbolic batch dim ('batch') instead of --batch-size")
    parser.add_argument('--dynamic-size', action='store_true',
                        help="symbolic height and width ('height', 'width') instead of "
                        '--shape (which then only sets the checked sizes)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='export only the backbone of a classifier or detector')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset (default: {DEFAULT_OPSET}, the lowest one torch '
                        "exports natively; older ones go through onnx's version converter, "
                        'which fails on the Reduce* ops of most mmsfr graphs)')
    parser.add_argument('--rtol', type=float, default=DEFAULT_RTOL,
                        help='bound of max|onnxruntime - torch| / max|torch| per output '
                        f'(default: {DEFAULT_RTOL:g})')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    args.shape = parse_shape(parser, args.shape, minimum=16)
    if args.batch_size is not None:
        if args.dynamic_batch:
            parser.error('--batch-size fixes the batch dim; it cannot be combined with '
                         '--dynamic-batch')
        if args.batch_size < 1:
            parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    if args.opset < 7:
        parser.error(f'--opset must be >= 7, got {args.opset}')
    if not args.rtol > 0:
        parser.error(f'--rtol must be > 0, got {args.rtol}')
    return args


def _log(message: str) -> None:
    print(message, flush=True)


@tool_main
def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit code."""
    args = parse_args(argv)
    import onnx
    import torch

    from mmsfr.deployment import (VerificationError, check_deploy_form, export_verified,
                                  format_reports, load_export_module)

    batch_size = args.batch_size or 1
    with not_written(args.out):
        check_output(args.out, args.checkpoint, args.config)
        module = load_export_module(args.config, args.checkpoint, cfg_options=args.cfg_options,
                                    backbone_only=args.backbone_only, log=_log)
        print(f'model: {module.description}')
        print(f'input: {module.preprocessing}')
        check_deploy_form(module)

        def run(size: tuple[int, int]) -> None:  # a too small --shape is named first
            with torch.no_grad():
                module(torch.rand(1, 3, *size))

        check_input_size(run, args.shape, module.description.split(':')[0])
        try:
            result = export_verified(
                module, args.out, args.shape, batch_size=batch_size,
                dynamic_batch=args.dynamic_batch, dynamic_size=args.dynamic_size,
                opset=args.opset, rtol=args.rtol, inputs=(args.checkpoint, args.config),
                log=_log)
        except VerificationError as err:
            print(format_reports(err.reports))
            raise UserError(one_line(err)) from err
        except onnx.checker.ValidationError as err:
            raise UserError(f'the exported graph fails onnx.checker: {one_line(err)}') from err
    print(result.table())
    ops = ', '.join(f'{op} {n}' for op, n in result.op_counts.most_common())
    print(f'ops: {ops}')
    dims = 'x'.join(map(str, result.input_shape))
    worst = max(r.max_rel_diff for r in result.reports)
    print(f'wrote {result.path} (opset {result.opset}, input {dims}, outputs '
          f"{', '.join(result.output_names)}); max relative difference {worst:.2e} "
          f'<= {args.rtol:g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
