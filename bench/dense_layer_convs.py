#!/usr/bin/env python
"""CondenseNetV2's dense-layer convs: mmsfr's fused kernel vs oneDNN and onnxruntime.

Example:
    python bench/dense_layer_convs.py               # CondenseNetV2-C deploy, 224, 1 thread
    python bench/dense_layer_convs.py --arch a --repeats 50
    python bench/dense_layer_convs.py --quick       # CI smoke mode: A at 64, 1 round

Most of a CondenseNetV2's multiply-adds are in its dense layers' two grouped convs: the
learned group conv's 1x1 conv over the selected input channels and the grouped 3x3
conv after it (4 groups, a few to a few dozen channels per group). The script records
the ``mmsfr.ops.lgc_conv_`` calls of one deploy forward (random weights, condensed) and
times, dense block by dense block, interleaved round-robin in one process:

* ``mmsfr``: the kernel as the model calls it, on a buffer of the block's shape: it
  gathers the selected channels, applies both BatchNorms and activations and the
  LGC's output shuffle, and runs both convs;
* ``oneDNN``: the two convs alone, as ``F.conv2d`` grouped calls (PyTorch's CPU conv
  library) on an input already gathered, with no BN, activation or shuffle;
* ``onnxruntime``: the same two convs alone as grouped ``Conv`` nodes of one graph per
  block (CPU execution provider, its graph optimisations on).

The libraries are given less work than the kernel, so their times are a floor for
running these layers with them. Each row gives the multiply-adds, the medians and the
achieved GFLOP/s; the last column is the kernel's speed as a share of the dense GEMM
ceiling measured in the same run. A table of the shapes (channels per group) follows.

Target: the kernel over all dense layers <= 1.0x the faster library's convs alone.
Exactness: the kernel with identity BatchNorms and activations against the same convs
(and shuffle) in PyTorch, every layer (max relative difference <= 1e-4).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, NamedTuple, Sequence
from unittest import mock

import torch
import torch.nn.functional as F

from _common import (add_kernel_model_args, base_parser, check_positive, gemm_gflops,
                     kernel_model, kernels_status, print_table, rel_diff,
                     time_interleaved, verdict)
from mmsfr.models.layers import channel_shuffle
from mmsfr.ops import dense_layer


class LayerCall(NamedTuple):
    """One recorded ``lgc_conv_`` call: the buffer's shape and the arguments after it."""
    shape: tuple[int, ...]
    args: tuple

    @property
    def channels(self) -> int:
        return self.args[0]

    @property
    def index(self) -> torch.Tensor:
        return self.args[1]

    @property
    def weight(self) -> torch.Tensor:
        return self.args[5]

    @property
    def groups(self) -> int:
        return self.args[6]

    @property
    def conv_weight(self) -> torch.Tensor:
        return self.args[10]

    def macs(self) -> int:
        """Multiply-adds of the two convs (per image)."""
        pixels = self.shape[2] * self.shape[3]
        return pixels * (self.weight[:, :, 0, 0].numel() + self.conv_weight.numel())

    def identity_args(self) -> tuple:
        """The arguments with identity BatchNorms (eps 0) and activations."""
        def identity(norm):
            ones = torch.ones_like(norm[0])
            return [ones, torch.zeros_like(ones), torch.zeros_like(ones), ones]
        channels, index, norm, _, _, weight, groups, norm_2, _, _, conv_weight = self.args
        return (channels, index, identity(norm), 0.0, 0, weight, groups, identity(norm_2),
                0.0, 0, conv_weight)


def record_layers(forward: Callable[[], object]) -> list[LayerCall]:
    """The ``lgc_conv_`` calls ``forward()`` makes through the extension's bindings."""
    calls = []
    kernel = dense_layer._KERNELS['lgc_conv_']

    def record(buf, *args):
        calls.append(LayerCall(tuple(buf.shape), args))
        kernel(buf, *args)

    with mock.patch.dict(dense_layer._KERNELS, {'lgc_conv_': record}), torch.inference_mode():
        forward()
    return calls


def library_convs(x: torch.Tensor, call: LayerCall) -> torch.Tensor:
    """The layer's 1x1 and 3x3 grouped convs alone (what oneDNN is timed on)."""
    y = F.conv2d(x, call.weight, groups=call.groups)
    return F.conv2d(y, call.conv_weight, padding=1, groups=call.groups)


def reference(buf: torch.Tensor, call: LayerCall) -> torch.Tensor:
    """What the kernel writes with identity BatchNorms and activations."""
    x = buf[:, :call.channels].index_select(1, call.index)
    y = channel_shuffle(F.conv2d(x, call.weight, groups=call.groups), call.groups)
    return F.conv2d(y, call.conv_weight, padding=1, groups=call.groups)


def onnx_session(calls: Sequence[LayerCall], batch: int, threads: int):
    """One onnxruntime session running each layer's two grouped ``Conv`` nodes, inputs
    ``x0``, ``x1``, ... (the gathered channels), outputs ``y0``, ``y1``, ..."""
    from onnx import TensorProto, helper, numpy_helper

    from mmsfr.deployment._onnx import cpu_session
    nodes, inputs, outputs, weights = [], [], [], []
    for i, call in enumerate(calls):
        h, w = call.shape[2:]
        inputs.append(helper.make_tensor_value_info(
            f'x{i}', TensorProto.FLOAT, (batch, call.index.numel(), h, w)))
        outputs.append(helper.make_tensor_value_info(
            f'y{i}', TensorProto.FLOAT, (batch, call.conv_weight.shape[0], h, w)))
        weights += [numpy_helper.from_array(call.weight.detach().numpy(), f'w{i}'),
                    numpy_helper.from_array(call.conv_weight.detach().numpy(), f'v{i}')]
        nodes += [helper.make_node('Conv', [f'x{i}', f'w{i}'], [f'm{i}'], group=call.groups,
                                   kernel_shape=[1, 1]),
                  helper.make_node('Conv', [f'm{i}', f'v{i}'], [f'y{i}'], group=call.groups,
                                   kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, 'dense_layer_convs', inputs, outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    return cpu_session(model.SerializeToString(), threads)


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    add_kernel_model_args(parser)
    parser.add_argument('--batch', type=int, default=1, help='batch size (default 1)')
    args = parser.parse_args(argv)
    check_positive(parser, args, 'threads', 'batch')
    setup = kernel_model(args, 'no kernel to compare')
    if setup is None:
        return 0
    model, arch, size, repeats, warmup = setup
    image = torch.rand(args.batch, 3, size, size)
    layers = record_layers(lambda: model(image, mode='tensor'))

    blocks: dict[tuple[int, ...], list[LayerCall]] = defaultdict(list)
    for call in layers:
        blocks[call.shape].append(call)
    kernel = dense_layer._KERNELS['lgc_conv_']
    fns, worst = {}, 0.0
    for b, (shape, calls) in enumerate(blocks.items()):
        buf = torch.randn(shape)
        gathered = [buf[:, :c.channels].index_select(1, c.index).contiguous() for c in calls]
        feed = {f'x{i}': x.numpy() for i, x in enumerate(gathered)}
        session = onnx_session(calls, args.batch, args.threads)

        def mmsfr_block(buf=buf, calls=calls):
            for c in calls:
                kernel(buf, *c.args)

        def onednn_block(gathered=gathered, calls=calls):
            for x, c in zip(gathered, calls):
                library_convs(x, c)

        fns[b, 'mmsfr'] = mmsfr_block
        fns[b, 'oneDNN'] = onednn_block
        fns[b, 'onnxruntime'] = lambda session=session, feed=feed: session.run(None, feed)
        with torch.inference_mode():
            onnx_out = session.run(None, feed)
            for i, (x, c) in enumerate(zip(gathered, calls)):
                expected = library_convs(x, c)
                worst = max(worst, rel_diff(torch.from_numpy(onnx_out[i]), expected))
                kernel(buf, *c.identity_args())
                written = buf[:, c.channels:c.channels + c.conv_weight.shape[0]]
                worst = max(worst, rel_diff(written, reference(buf, c)))
    ceiling = gemm_gflops(args.threads, size=256 if args.quick else 1024)
    times = time_interleaved(fns, repeats, warmup)

    names = ('mmsfr', 'oneDNN', 'onnxruntime')
    rows, shapes, totals, total_macs = [], [], dict.fromkeys(names, 0.0), 0
    for b, (shape, calls) in enumerate(blocks.items()):
        macs = args.batch * sum(c.macs() for c in calls)
        total_macs += macs
        row = [b, f'{shape[2]}x{shape[3]}', len(calls), f'{macs / 1e6:.1f}']
        for name in names:
            totals[name] += times[b, name]
            row.append(f'{times[b, name] * 1e3:.2f}')
        row += [f'{2 * macs / times[b, name] / 1e9:.1f}' for name in names]
        row.append(f'{200 * macs / times[b, "mmsfr"] / 1e9 / ceiling:.0f}%')
        rows.append(row)
        first, last = calls[0], calls[-1]
        shapes.append([b, f'{first.index.numel()}-{last.index.numel()}',
                       f'{first.weight.shape[1]}-{last.weight.shape[1]}',
                       first.weight.shape[0] // first.groups,
                       first.conv_weight.shape[1], first.conv_weight.shape[0] // first.groups,
                       first.groups])
    row = ['all', '', len(layers), f'{total_macs / 1e6:.1f}']
    row += [f'{totals[name] * 1e3:.2f}' for name in names]
    row += [f'{2 * total_macs / totals[name] / 1e9:.1f}' for name in names]
    row.append(f'{200 * total_macs / totals["mmsfr"] / 1e9 / ceiling:.0f}%')
    rows.append(row)

    print(f'CondenseNetV2-{arch.upper()} deploy at {size}, batch {args.batch}, '
          f'{args.threads} thread(s), {kernels_status()}; {repeats} interleaved rounds after '
          f'{warmup} warm-up; dense GEMM ceiling {ceiling:.1f} GFLOP/s')
    print_table('Dense-layer convs per block (median ms; mmsfr also gathers, normalises, '
                'activates and shuffles)',
                ['block', 'map', 'layers', 'M MACs', 'mmsfr ms', 'oneDNN ms',
                 'onnxruntime ms', 'mmsfr GFLOP/s', 'oneDNN GFLOP/s',
                 'onnxruntime GFLOP/s', 'mmsfr of GEMM'], rows)
    print_table('Shapes (first-last layer of each block)',
                ['block', 'LGC inputs', '1x1 inputs per group', '1x1 outputs per group',
                 '3x3 inputs per group', '3x3 outputs per group', 'groups'], shapes)
    library = min(totals['oneDNN'], totals['onnxruntime'])
    ratio = totals['mmsfr'] / library
    print_table('Targets', ['target', 'measured', ''],
                [['mmsfr kernel <= 1.0x the faster library\'s convs alone',
                  f'{ratio:.2f}x ({totals["mmsfr"] * 1e3:.2f} vs {library * 1e3:.2f} ms)',
                  verdict(ratio <= 1.0)]])
    print(f'\nExactness: kernel (identity BN / activation) and onnxruntime vs PyTorch convs: '
          f'max relative difference {worst:.1e} (<= 1e-4: {worst <= 1e-4})')
    return 0 if worst <= 1e-4 else 1


if __name__ == '__main__':
    raise SystemExit(main())
