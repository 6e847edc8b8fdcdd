"""Verification of an exported graph: ``onnx.checker``, then onnxruntime vs PyTorch.

:func:`verify_onnx` runs ``onnx.checker`` (full check, with shape inference) on a file,
then the graph in onnxruntime (CPU) and the PyTorch eval model on the same seeded random
inputs at every requested batch size and input size, and records per output
``max|onnxruntime - torch|`` and ``max|torch|``: a :class:`VerificationReport`, printed
by :func:`format_reports`. An output whose relative difference exceeds ``rtol`` (1e-4)
fails it.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from ._onnx import cpu_session, onnx
from .graph_passes import check_size

__all__ = ['DEFAULT_RTOL', 'Comparison', 'VerificationError', 'VerificationReport',
           'alternative_size', 'format_reports', 'verify_onnx']

#: Default bound of the relative difference ``max|ort - torch| / max|torch|``.
DEFAULT_RTOL = 1e-4


class VerificationError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model.

    Attributes:
        reports: The verification reports, the failing rows included.
    """

    def __init__(self, message: str, reports: Sequence['VerificationReport']) -> None:
        super().__init__(message)
        self.reports = list(reports)


def example_input(batch: int, size: Sequence[int], seed: int = 0) -> torch.Tensor:
    """The seeded random ``batch x 3 x H x W`` input of the checks.

    Example:
        >>> tuple(example_input(2, (8, 6)).shape)
        (2, 3, 8, 6)
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=gen)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside; afterwards every submodule gets its own mode back.

    Example:
        >>> net = nn.Sequential(nn.BatchNorm2d(2)).train()
        >>> with eval_mode(net):
        ...     net.training
        False
        >>> net.training, net[0].training
        (True, True)
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def as_list(outputs) -> list[torch.Tensor]:
    """A model's output (a tensor or a sequence of them) as a list.

    Example:
        >>> len(as_list(torch.zeros(2))), len(as_list((torch.zeros(1), torch.zeros(1))))
        (1, 2)
    """
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


def _relu_graph(path: str | os.PathLike) -> None:
    """Write a one-node ``Relu`` graph with symbolic dims (for the examples)."""
    from onnx import TensorProto, helper
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ('batch', 3, 'height', 'width'))
          for n in ('input', 'out')]
    graph = helper.make_graph([helper.make_node('Relu', ['input'], ['out'])], 'g',
                              io[:1], io[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)]),
              os.fspath(path))


@dataclass(frozen=True)
class Comparison:
    """One output of one run: onnxruntime against PyTorch."""

    graph: str
    input_shape: tuple[int, ...]
    output: str
    output_shape: tuple[int, ...]
    max_ref: float
    max_diff: float

    @property
    def rel_diff(self) -> float:
        """``max|ort - torch| / max|torch|`` (the absolute difference if torch is all 0)."""
        return self.max_diff / self.max_ref if self.max_ref > 0 else self.max_diff


@dataclass
class VerificationReport:
    """onnxruntime vs PyTorch over several input shapes of one graph."""

    path: Path
    label: str
    rtol: float
    rows: list[Comparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.rel_diff <= self.rtol for r in self.rows)

    @property
    def max_rel_diff(self) -> float:
        return max((r.rel_diff for r in self.rows), default=math.inf)

    def failures(self) -> list[Comparison]:
        return [r for r in self.rows if not r.rel_diff <= self.rtol]


def format_reports(reports: Sequence[VerificationReport]) -> str:
    """A table of the comparisons of one or more reports.

    Example:
        >>> report = VerificationReport(Path('m.onnx'), 'dynamic', 1e-4, [
        ...     Comparison('dynamic', (1, 3, 224, 224), 'logits', (1, 1000), 6.12, 1.9e-6)])
        >>> print(format_reports([report]))
        graph    input        output  output shape  max|torch|  max rel diff  check
        ---------------------------------------------------------------------------
        dynamic  1x3x224x224  logits  1x1000        6.12        3.10e-07      ok
    """
    def shape(s):
        return 'x'.join(map(str, s))
    head = ('graph', 'input', 'output', 'output shape', 'max|torch|', 'max rel diff', 'check')
    body = [(r.graph, shape(r.input_shape), r.output, shape(r.output_shape), f'{r.max_ref:.3g}',
             f'{r.rel_diff:.2e}', 'ok' if r.rel_diff <= rep.rtol else f'FAIL > {rep.rtol:g}')
            for rep in reports for r in rep.rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [head, *body]]
    return '\n'.join([lines[0], '-' * len(lines[0]), *lines[1:]])


def _static_dims(path: str | os.PathLike) -> dict[int, int]:
    graph_input = onnx.load(os.fspath(path), load_external_data=False).graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    return {i: d.dim_value for i, d in enumerate(dims) if d.HasField('dim_value')}


def verify_onnx(module: nn.Module, path: str | os.PathLike, *,
                batch_sizes: Sequence[int] = (1, 2),
                sizes: Sequence[Sequence[int]] = ((224, 224), ),
                rtol: float = DEFAULT_RTOL, label: str | None = None,
                seed: int = 0) -> VerificationReport:
    """Check an ONNX file and compare onnxruntime with the PyTorch model.

    Runs ``onnx.checker.check_model`` (full check), then, for every batch size and
    input size, the graph in onnxruntime (CPUExecutionProvider) and ``module`` in eval
    mode on the same seeded random input, and records per output
    ``max|ort - torch|`` and ``max|torch|``.

    Args:
        module: The PyTorch network the graph was exported from.
        path: The ``.onnx`` file.
        batch_sizes: Batch sizes to run (each must fit a static batch dim).
        sizes: Input sizes (H, W) to run (each must fit static H/W dims).
        rtol: Bound of the relative difference (the report's ``passed``).
        label: Name of the graph in the table (default: the file name).
        seed: Seed of the random inputs.

    Returns:
        The report; see :attr:`VerificationReport.passed`.

    Raises:
        onnx.checker.ValidationError: the file is not a valid ONNX model.
        ValueError: a requested shape does not fit the graph's static dims.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _relu_graph(f'{tmp}/relu.onnx')
        ...     report = verify_onnx(nn.ReLU(), f'{tmp}/relu.onnx', sizes=[(8, 8), (9, 7)])
        >>> report.passed, report.max_rel_diff, len(report.rows)
        (True, 0.0, 4)
    """
    path = Path(path)
    onnx.checker.check_model(os.fspath(path), full_check=True)
    static = _static_dims(path)
    shapes = [(b, 3, *check_size(s)) for b in batch_sizes for s in sizes]
    for shape in shapes:
        clash = {i: v for i, v in static.items() if shape[i] != v}
        if clash:
            raise ValueError(f'{path.name}: input {"x".join(map(str, shape))} does not fit its '
                             f'static input dims {static} (axis: size)')
    session = cpu_session(path)
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    report = VerificationReport(path, label or path.name, rtol)
    with eval_mode(module):
        for shape in shapes:
            x = example_input(shape[0], shape[2:], seed)
            with torch.no_grad():
                refs = as_list(module(x))
            gots = session.run(None, {input_name: x.numpy()})
            if len(gots) != len(refs):
                raise ValueError(f'{path.name} has {len(gots)} outputs, the model {len(refs)}')
            for name, ref, got in zip(names, refs, gots):
                got = torch.from_numpy(got)
                ref = ref.detach().float()
                diff = ((got - ref).abs().max().item() if got.shape == ref.shape
                        else math.inf)
                report.rows.append(Comparison(report.label, shape, name, tuple(ref.shape),
                                              ref.abs().max().item(), diff))
    return report


def alternative_size(size: Sequence[int]) -> tuple[int, int]:
    """The second input size of the dynamic-graph check: ``(H + 32, W + 16)``.

    Non-square and, for square multiples of 32, not a multiple of 32 in W, so that
    odd feature-map sizes (pooling floors) are exercised too.

    Example:
        >>> alternative_size((224, 224))
        (256, 240)
    """
    h, w = check_size(size)
    return h + 32, w + 16
