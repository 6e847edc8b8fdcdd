"""ONNX export of an mmsfr network, checked against PyTorch before anything is written.

Exporter: torch's ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``).
The SFR's ``index_add`` exports, with the index read before tracing
(:func:`~mmsfr.models.layers.condense.static_scatter_indices`), either as one dense
``MatMul`` + ``Add`` (a 1x1 SFR with at most 64 new channels: its grouped weight
expanded to the old channels, :func:`~mmsfr.models.layers.condense.dense_reactivation_weight`)
or as a chain of ``ScatterND(reduction='add')`` nodes into the old features viewed as
``(N * C, H * W)`` rows, one per round of distinct target channels: no transposes, no
zero tensor, and no repeated index within a node (onnxruntime's CPU ScatterND applies a
node's rows in parallel). ``index_select`` (LGC, CondenseNet's pruned classifier) becomes
``Gather``, with the integer index as a small initializer, and channel shuffles
``Reshape`` + ``Transpose``: no dense index matrix, no extra matrix product. (The
TorchScript-based exporter, ``dynamo=False``, which MMDeploy drives, exports mmsfr
models exactly too: the SFR's scatter-add goes through
:class:`~mmsfr.models.layers.condense.ChannelScatterAdd`; ``docs/deployment.md``.)
Any other scatter-add with repeated constant indices is split into such a chain
(:func:`~mmsfr.deployment.graph_passes.split_repeated_scatter_adds`). The dense layers'
grouped 3x3 convs with at most 4 outputs per group export as depthwise ``Conv`` passes
+ ``ReduceSum`` (:func:`~mmsfr.models.layers.norm_act.depthwise_export_routes`), which
onnxruntime runs faster than a grouped ``Conv`` of those shapes.

How a file is made (:func:`export_onnx`): the model is exported once with a symbolic
batch, height and width (the *dynamic graph*, :func:`export_dynamic`); the written graph
is the dynamic graph with the requested dims fixed (the batch unless ``dynamic_batch``,
H and W unless ``dynamic_size``; :func:`~mmsfr.deployment.graph_passes.specialise`).

How it is checked (:func:`export_verified`): ``onnx.checker`` and onnxruntime against
the PyTorch eval model (:func:`~mmsfr.deployment.verify.verify_onnx`), the dynamic graph
at batch sizes 1 and 2 and at two input sizes (the requested one and a larger
non-square one), the written graph at the shapes it accepts. An output whose relative
difference ``max|onnxruntime - torch| / max|torch|`` exceeds ``rtol`` (1e-4) fails the
export, and nothing is written.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from mmsfr.checkpoint import atomic_output, check_output, scratch_file
from mmsfr.models.layers.condense import DENSE_EXPORT_MAX_GROWTH, static_scatter_indices
from mmsfr.models.layers.grouped_conv import EXPORT_DEPTHWISE_MAX_OUT
from mmsfr.models.layers.norm_act import depthwise_export_routes

from ._onnx import onnx

from .graph_passes import (DYNAMIC_DIMS, check_size, graph_opset, onnx_op_counts, specialise,
                           split_repeated_scatter_adds)
from .loading import check_deploy_form
from .verify import (DEFAULT_RTOL, VerificationError, VerificationReport, alternative_size,
                     as_list, eval_mode, example_input, format_reports, verify_onnx)

__all__ = ['DEFAULT_OPSET', 'INPUT_NAME', 'ExportResult', 'export_dynamic', 'export_onnx',
           'export_verified']

#: Default opset: the lowest one torch's exporter translates to natively (it
#: down-converts to older opsets with onnx's version converter, which fails on the
#: ``ReduceMean`` / ``ReduceSum`` nodes of most mmsfr graphs and leaves them at 18).
DEFAULT_OPSET = 18
#: Name of the graph input (``N x 3 x H x W`` float32).
INPUT_NAME = 'input'

Log = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def _output_names(module: nn.Module, example: torch.Tensor) -> list[str]:
    names = list(getattr(module, 'output_names', ()) or ())
    if not names:
        with torch.no_grad():
            count = len(as_list(module(example)))
        names = ['output'] if count == 1 else [f'output{i}' for i in range(count)]
    return names


def _tiny_net() -> nn.Module:
    """A small eval-mode conv net (for the examples)."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU()).eval()


def export_dynamic(module: nn.Module, shape: Sequence[int] = (224, 224),
                   opset: int = DEFAULT_OPSET, *,
                   dense_sfr_max_growth: int = DENSE_EXPORT_MAX_GROWTH,
                   depthwise_max_out: int = EXPORT_DEPTHWISE_MAX_OUT) -> onnx.ModelProto:
    """Export ``module`` with a symbolic batch, height and width.

    Args:
        module: Eval-mode network whose ``forward(x)`` returns a tensor or a tuple of
            tensors, e.g. an :class:`ExportModule`. Output names are its
            ``output_names`` (else ``output`` / ``output<i>``).
        shape: (H, W) of the example input used for tracing.
        opset: ONNX opset of the graph.
        dense_sfr_max_growth: 1x1 SFRs with at most this many new channels export as
            a dense ``MatMul``, the others as ``ScatterND`` rounds (0: all as rounds;
            see :func:`~mmsfr.models.layers.condense.static_scatter_indices`).
        depthwise_max_out: Grouped 3x3 convs of dense layers with at most this many
            outputs per group export as depthwise ``Conv`` passes + ``ReduceSum``, the
            others as one grouped ``Conv`` (0: grouped ``Conv`` everywhere; see
            :func:`~mmsfr.models.layers.norm_act.depthwise_export_routes`).

    Returns:
        The ONNX model (in memory), input :data:`INPUT_NAME`.

    Raises:
        TrainTimeModelError: ``module`` holds a train-time LGC/SFR layer.
        ValueError: torch could not produce the requested opset.

    Example:
        >>> graph = export_dynamic(_tiny_net(), (32, 32))
        >>> [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
        ['batch', 3, 'height', 'width']
    """
    check_deploy_form(module)
    shape = check_size(shape)
    with eval_mode(module), static_scatter_indices(module, dense_sfr_max_growth), \
            depthwise_export_routes(module, depthwise_max_out):
        # Batch 2: torch.export specialises example sizes 0 and 1.
        example = example_input(2, shape)
        program = torch.onnx.export(
            module, (example, ), None, dynamo=True, opset_version=opset,
            input_names=[INPUT_NAME], output_names=_output_names(module, example),
            dynamic_shapes=(dict(DYNAMIC_DIMS), ), verbose=False, optimize=True)
    model = program.model_proto
    got = graph_opset(model)
    if got != opset:
        raise ValueError(f"torch's ONNX exporter could not convert the graph to opset "
                         f'{opset} (it is at opset {got}); use opset {got} or newer')
    split_repeated_scatter_adds(model)
    return model




def _save(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    onnx.save_model(model, os.fspath(path))


def export_onnx(module: nn.Module, out: str | os.PathLike, shape: Sequence[int] = (224, 224),
                *, batch_size: int = 1, dynamic_batch: bool = False,
                dynamic_size: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``module`` to ``out`` (no verification; see :func:`export_verified`).

    Args:
        module: Eval-mode network, e.g. an :class:`ExportModule`.
        out: Output ``.onnx`` path (one self-contained file; overwritten).
        shape: Input (H, W); fixed in the graph unless ``dynamic_size``.
        batch_size: Fixed batch size of the graph (ignored with ``dynamic_batch``).
        dynamic_batch: Keep the batch dim symbolic (``batch``).
        dynamic_size: Keep H and W symbolic (``height``, ``width``).
        opset: ONNX opset.

    Returns:
        ``out`` as a Path.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = export_onnx(_tiny_net(), Path(tmp) / 'net.onnx', (32, 32))
        ...     onnx_op_counts(path)
        Counter({'Conv': 1, 'Relu': 1})
    """
    model = export_dynamic(module, shape, opset)
    model = specialise(model, None if dynamic_batch else batch_size,
                       None if dynamic_size else shape)
    with atomic_output(out) as tmp:
        _save(model, tmp)
    return Path(out)


@dataclass
class ExportResult:
    """What :func:`export_verified` wrote and how it was checked."""

    path: Path
    opset: int
    op_counts: Counter
    input_shape: tuple[int | str, ...]
    output_names: tuple[str, ...]
    reports: list[VerificationReport]

    def table(self) -> str:
        """The comparison table of every report (:func:`format_reports`)."""
        return format_reports(self.reports)


def _input_dims(model: onnx.ModelProto) -> tuple[int | str, ...]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField('dim_value') else d.dim_param for d in dims)


def export_verified(module: nn.Module, out: str | os.PathLike,
                    shape: Sequence[int] = (224, 224), *, batch_size: int = 1,
                    dynamic_batch: bool = False, dynamic_size: bool = False,
                    opset: int = DEFAULT_OPSET, rtol: float = DEFAULT_RTOL,
                    batch_sizes: Sequence[int] = (1, 2),
                    sizes: Sequence[Sequence[int]] | None = None,
                    inputs: Sequence[str | os.PathLike] = (),
                    log: Log | None = None) -> ExportResult:
    """Export, check and verify; write ``out`` only if every check passes.

    1. export the dynamic graph (:func:`export_dynamic`) and verify it at
       ``batch_sizes`` x ``sizes`` (default: ``shape`` and :func:`alternative_size`);
    2. fix the requested dims (:func:`specialise`) and verify that graph at the
       shapes it accepts (its batch / ``shape`` where they are fixed);
    3. rename the verified temporary file (same directory) to ``out``.

    A fully dynamic export (``dynamic_batch`` and ``dynamic_size``) is the dynamic
    graph itself, verified once.

    Args:
        module: Eval-mode network, e.g. an :class:`ExportModule`.
        out: Output path; never one of ``inputs``; untouched on any failure.
        shape: Input (H, W) of the graph.
        batch_size: Fixed batch size of the graph (ignored with ``dynamic_batch``).
        dynamic_batch: Keep the batch symbolic in ``out``.
        dynamic_size: Keep H and W symbolic in ``out``.
        opset: ONNX opset.
        rtol: Bound of ``max|ort - torch| / max|torch|`` per output.
        batch_sizes: Batch sizes of the dynamic-graph check (two by default).
        sizes: Input sizes of the dynamic-graph check.
        inputs: Files ``out`` must not be (checkpoint, config).
        log: Receives progress messages.

    Returns:
        The :class:`ExportResult` (path, opset, op counts, reports).

    Raises:
        TrainTimeModelError: ``module`` holds a train-time LGC/SFR layer.
        VerificationError: a check failed (its ``reports`` hold the table).
        ValueError: ``out`` is one of ``inputs``, bad shapes or opset.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     result = export_verified(_tiny_net(), Path(tmp) / 'net.onnx', (32, 32))
        >>> result.input_shape, [r.label for r in result.reports]
        ((1, 3, 32, 32), ['dynamic', 'net.onnx'])
        >>> [r.input_shape for r in result.reports[0].rows]
        [(1, 3, 32, 32), (1, 3, 64, 48), (2, 3, 32, 32), (2, 3, 64, 48)]

        With a config and a deploy checkpoint
        (:func:`~mmsfr.deployment.loading.load_export_module`)::

            module = load_export_module('condensenetv2-a_deploy_in1k',
                                        'checkpoints/condensenetv2_a_deploy_in1k.pth')
            print(export_verified(module, 'cdnv2_a.onnx', (224, 224)).table())
    """
    log = log or _silent
    out = check_output(out, *inputs)
    check_deploy_form(module)
    shape = check_size(shape)
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    sizes = [check_size(s) for s in (sizes or (shape, alternative_size(shape)))]
    # The graph written last becomes ``out`` in one rename (its temporary file is removed
    # on any failure and on SIGTERM/SIGINT); the dynamic graph, when it is not the output
    # itself, goes to a scratch file beside it.
    with atomic_output(out, *inputs) as final_path, scratch_file(out) as scratch:
        what = getattr(module, 'description', type(module).__name__)
        log(f'exporting {what}, with a symbolic batch, height and width (opset {opset}) ...')
        dynamic = export_dynamic(module, shape, opset)
        fully_dynamic = dynamic_batch and dynamic_size
        dynamic_path = final_path if fully_dynamic else scratch
        _save(dynamic, dynamic_path)
        label = out.name if fully_dynamic else 'dynamic'
        log(f'checking it at batch sizes {tuple(batch_sizes)} x input sizes '
            f'{[f"{h}x{w}" for h, w in sizes]} against PyTorch ...')
        reports = [verify_onnx(module, dynamic_path, batch_sizes=batch_sizes, sizes=sizes,
                               rtol=rtol, label=label)]
        final = dynamic
        if not fully_dynamic:
            final = specialise(dynamic, None if dynamic_batch else batch_size,
                               None if dynamic_size else shape)
            _save(final, final_path)
            reports.append(verify_onnx(
                module, final_path, rtol=rtol, label=out.name,
                batch_sizes=batch_sizes if dynamic_batch else (batch_size, ),
                sizes=sizes if dynamic_size else (shape, )))
        failed = [r for r in reports if not r.passed]
        if failed:
            worst = max(failed, key=lambda r: r.max_rel_diff)
            raise VerificationError(
                f'onnxruntime does not reproduce PyTorch: max relative difference '
                f'{worst.max_rel_diff:.3g} > {rtol:g} in the {worst.label} graph', reports)
    return ExportResult(out, graph_opset(final), onnx_op_counts(final), _input_dims(final),
                        tuple(o.name for o in final.graph.output), reports)
