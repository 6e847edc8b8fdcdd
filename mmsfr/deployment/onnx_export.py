"""ONNX export of mmsfr models in their deploy form, checked against PyTorch.

What is exported (:class:`ExportModule`): a classifier as ``image -> logits``, or a
backbone (of a classifier with ``backbone_only``, of a detector always) as ``image ->
features``, one named output ``feat<i>`` per level ``i`` of its ``out_indices``.
Detectors themselves (necks, heads, post-processing) are not exported. The input is
the network input, i.e. the image after the config's ``data_preprocessor`` (mean/std,
channel order): that step is not part of the graph.

Only the deploy form is exported: a model holding a train-time (masked) LGC/SFR layer
is refused (:func:`check_deploy_form`); convert it with ``tools/convert_to_deploy.py``.

Exporter: torch's ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``).
It turns ``index_add`` (SFR) into ``ScatterND(reduction='add')`` and ``index_select``
(LGC, CondenseNet's pruned classifier) into ``Gather``, both with the integer index as
a small initializer, and channel shuffles into ``Reshape`` + ``Transpose``: no dense
index matrix, no extra matrix product. The legacy TorchScript exporter
(``dynamo=False``) is not used: it maps ``index_add`` to an overwriting
``ScatterElements``, which is wrong whenever two SFR groups reactivate the same old
channel (the usual case), and the graph it writes silently computes other features.
onnxruntime's CPU ``ScatterND`` has the opposite problem with such repeated indices (it
adds them from several threads at once and can lose updates), so every scatter-add is
split into a chain of scatters with unique indices
(:func:`split_repeated_scatter_adds`).

How a file is made (:func:`export_onnx`): the model is exported once with a symbolic
batch, height and width (the *dynamic graph*); the written graph is the dynamic graph
with the requested dims fixed (the batch unless ``dynamic_batch``, H and W unless
``dynamic_size``) and its shape arithmetic constant-folded by onnxscript's optimizer,
so a static graph has constant ``Reshape`` shapes and no ``Shape`` ops.

How it is checked (:func:`export_verified`, :func:`verify_onnx`): ``onnx.checker``
(full check, with shape inference) on both graphs, then onnxruntime (CPU) against the
PyTorch eval model on the same random inputs: the dynamic graph at batch sizes 1 and 2
and at two input sizes (the requested one and a larger non-square one), the written
graph at the shapes it accepts. An output whose relative difference
``max|onnxruntime - torch| / max|torch|`` exceeds ``rtol`` (1e-4) fails the export, and
nothing is written.
"""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

try:
    import onnx
    import onnxruntime as ort
    import onnxscript
except ImportError as _err:  # pragma: no cover - part of the deploy requirements
    raise ImportError(f'ONNX export needs onnx, onnxscript and onnxruntime ({_err}); '
                      'install them with: pip install -r requirements/deploy.txt') from _err

from mmsfr.checkpoint import (atomic_output, check_output, find_state_dict, read_state_dict,
                              scratch_file, strip_module_prefix)
from mmsfr.models.layers import CondensingConv, CondensingLinear

#: Default opset: the lowest one torch's exporter translates to natively (it
#: down-converts to older opsets with onnx's version converter, which fails on the
#: ``ReduceMean`` / ``ReduceSum`` nodes of most mmsfr graphs and leaves them at 18).
DEFAULT_OPSET = 18
#: Name of the graph input (``N x 3 x H x W`` float32).
INPUT_NAME = 'input'
#: Names of the symbolic input dims.
DYNAMIC_DIMS = {0: 'batch', 2: 'height', 3: 'width'}
#: Default bound of the relative difference ``max|ort - torch| / max|torch|``.
DEFAULT_RTOL = 1e-4

Log = Callable[[str], None]


def _silent(_: str) -> None:
    pass


class TrainTimeModelError(ValueError):
    """A model (or checkpoint) in its train-time (masked) form was given for export."""


class VerificationError(RuntimeError):
    """The exported graph does not reproduce the PyTorch model.

    Attributes:
        reports: The verification reports, the failing rows included.
    """

    def __init__(self, message: str, reports: Sequence['VerificationReport']) -> None:
        super().__init__(message)
        self.reports = list(reports)


# ----------------------------------------------------------------------------- model
def _is_detector(model: nn.Module) -> bool:
    try:
        from mmdet.models.detectors import BaseDetector
    except ImportError:  # pragma: no cover - mmdet is a dependency of mmsfr
        return False
    return isinstance(model, BaseDetector)


def _is_classifier(model: nn.Module) -> bool:
    from mmpretrain.models.classifiers import BaseClassifier
    return isinstance(model, BaseClassifier)


class ExportModule(nn.Module):
    """The exported network: ``image -> logits`` or ``image -> backbone features``.

    Args:
        model: An mmpretrain classifier (exported whole, ``mode='tensor'``: logits, no
            softmax), an mmdet detector (its backbone is exported) or a backbone.
        backbone_only: Export only the backbone of a classifier.

    Attributes:
        target: ``'classifier'`` or ``'backbone'``.
        output_names (tuple[str]): ``('logits',)`` for a classifier; ``feat<i>`` per
            level ``i`` of the backbone's ``out_indices`` (``feat0``, ``feat1``, ...
            for a backbone without ``out_indices``).

    Example:
        >>> from mmsfr.models import ShuffleNetV2
        >>> module = ExportModule(ShuffleNetV2(arch='0.5x', out_indices=(1, 2, 3)))
        >>> module.output_names
        ('feat1', 'feat2', 'feat3')
        >>> [tuple(f.shape) for f in module.eval()(torch.rand(1, 3, 64, 64))]
        [(1, 48, 8, 8), (1, 96, 4, 4), (1, 192, 2, 2)]
    """

    def __init__(self, model: nn.Module, backbone_only: bool = False) -> None:
        super().__init__()
        self.source = type(model).__name__  # the model the config builds
        self.training = model.training
        if _is_detector(model) or (backbone_only and hasattr(model, 'backbone')):
            self.net, self.target = model.backbone, 'backbone'
        elif _is_classifier(model):
            self.net, self.target = model, 'classifier'
        else:
            self.net, self.target = model, 'backbone'
        if self.target == 'classifier':
            self.output_names: tuple[str, ...] = ('logits', )
            what = f'{self.source} ({type(model.backbone).__name__} backbone)'
        else:
            indices = getattr(self.net, 'out_indices', None)
            self.output_names = tuple(f'feat{i}' for i in indices) if indices else ()
            owner = '' if self.net is model else f' of {self.source}'
            what = f'{type(self.net).__name__} backbone{owner}'
        #: E.g. ``'CondenseNetV2 backbone of RetinaNet: image -> feat2, feat3, feat4'``.
        self.description = f"{what}: image -> {', '.join(self.output_names) or 'features'}"
        #: How the input is prepared (set by :func:`load_export_module` from the config).
        self.preprocessing = ''

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.net(x, mode='tensor') if self.target == 'classifier' else self.net(x)
        return out if isinstance(out, torch.Tensor) else tuple(out)


def check_deploy_form(model: nn.Module) -> None:
    """Refuse a model that holds an LGC/SFR layer (or pruned Linear) in train-time form.

    Args:
        model: The model, or an :class:`ExportModule` (layer names are then given
            relative to the wrapped model, as in its checkpoint).

    Raises:
        TrainTimeModelError: naming the first such layer and how to convert.

    Example:
        >>> from mmsfr.models import CondenseNetV2
        >>> check_deploy_form(CondenseNetV2(arch='a', deploy=True))
        >>> check_deploy_form(CondenseNetV2(arch='a'))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmsfr.deployment.onnx_export.TrainTimeModelError: blocks.0.0.conv_1 (LearnedGroupConv) ...
    """
    root = model.net if isinstance(model, ExportModule) else model
    for name, module in root.named_modules():
        if isinstance(module, (CondensingConv, CondensingLinear)) and not module.deploy:
            form = 'masked' if isinstance(module, CondensingConv) else 'unpruned'
            raise TrainTimeModelError(
                f'{name or "the model"} ({type(module).__name__}) is in its train-time '
                f'({form}) form; only the deploy form is exported. Convert the checkpoint '
                'first with tools/convert_to_deploy.py CONFIG CHECKPOINT DEPLOY_CHECKPOINT, '
                'then export DEPLOY_CHECKPOINT with the matching *_deploy_* config')


def _build_model(cfg) -> nn.Module:
    """Build ``cfg.model`` in the config's scope, without pretrained initialisation."""
    from mmengine.registry import init_default_scope

    import mmsfr  # noqa: F401  (registers mmsfr models)
    backbone = cfg.model.get('backbone')
    if backbone is not None:
        backbone.pop('init_cfg', None)
    scope = cfg.get('default_scope', 'mmpretrain')
    init_default_scope(scope)
    return importlib.import_module(f'{scope}.registry').MODELS.build(cfg.model)


def _read_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    if '://' not in str(checkpoint):  # a local file: weights-only, one clear error
        return read_state_dict(checkpoint)
    from mmengine.runner import CheckpointLoader
    ckpt = CheckpointLoader.load_checkpoint(str(checkpoint), map_location='cpu')
    return strip_module_prefix(find_state_dict(ckpt, checkpoint)[0])


def _keys(keys: Sequence[str], limit: int = 3) -> str:
    more = f', ... ({len(keys)} in all)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_export_module(config: str | os.PathLike, checkpoint: str | os.PathLike | None,
                       *, backbone_only: bool = False, cfg_options: dict | None = None,
                       log: Log | None = None) -> ExportModule:
    """Build the model of a config, load a checkpoint and wrap it for export.

    Classifier configs load the whole checkpoint strictly (every key must match).
    Detector configs load only the backbone: the ``backbone.*`` weights of a detector
    or classifier checkpoint (or a bare backbone state_dict); every backbone weight
    must be present, extra backbone keys (e.g. a classifier's ``conv_last``) are
    ignored and reported through ``log``.

    Args:
        config: mmpretrain classifier or mmdet detector config.
        checkpoint: Checkpoint path or URL; None keeps the built (random) weights.
        backbone_only: Export the backbone of a classifier (detectors: always).
        cfg_options: Overrides merged into the config.
        log: Receives notes (ignored keys).

    Returns:
        The :class:`ExportModule`, in eval mode.

    Raises:
        ValueError: the checkpoint does not fit the model (names the keys, or, from
            the model, the arch / deploy-form mismatch).
        FileNotFoundError: missing config or checkpoint.

    Example:
        >>> module = load_export_module(  # doctest: +SKIP
        ...     'configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py',
        ...     'checkpoints/condensenetv2_a_deploy_in1k.pth')
    """
    from mmsfr.utils.tool_setup import read_config

    log = log or _silent
    cfg = read_config(str(config), cfg_options)
    model = _build_model(cfg)
    if checkpoint is not None:
        state_dict = _read_state_dict(checkpoint)
        if _is_detector(model):
            prefix = 'backbone.'
            if any(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()
                              if k.startswith(prefix)}
            missing, unexpected = model.backbone.load_state_dict(state_dict, strict=False)
            if missing:
                raise ValueError(
                    f'{checkpoint}: {len(missing)} weights of the '
                    f'{type(model.backbone).__name__} backbone are not in the checkpoint '
                    f'({_keys(missing)}); use a checkpoint of this backbone')
            if unexpected:
                log(f'note: ignored {len(unexpected)} checkpoint keys the backbone does not '
                    f'have ({_keys(unexpected)})')
        else:
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
            if missing or unexpected:
                parts = [f'{len(missing)} missing keys ({_keys(missing)})' if missing else '',
                         f'{len(unexpected)} unexpected keys ({_keys(unexpected)})'
                         if unexpected else '']
                raise ValueError(f'{checkpoint} does not fit the model of {config}: '
                                 + '; '.join(p for p in parts if p))
    module = ExportModule(model, backbone_only=backbone_only).eval()
    module.preprocessing = _preprocessing(cfg)
    return module


def _preprocessing(cfg) -> str:
    """How the config's data_preprocessor prepares the network input, in words."""
    pre = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    mean, std = pre.get('mean'), pre.get('std')
    if mean is None or std is None:
        return 'the image as the config feeds it (no mean/std in its data_preprocessor)'
    rgb = pre.get('to_rgb', pre.get('bgr_to_rgb', False))
    fmt = lambda v: '[' + ', '.join(f'{x:g}' for x in v) + ']'  # noqa: E731
    return (f"{'RGB' if rgb else 'BGR'} image in 0-255, minus mean {fmt(mean)}, divided by "
            f'std {fmt(std)} (the config\'s data_preprocessor; not part of the graph)')


# ----------------------------------------------------------------------------- export
def _example_input(batch: int, size: Sequence[int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=gen)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside; afterwards every submodule gets its own mode back."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _as_list(outputs) -> list[torch.Tensor]:
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


def _output_names(module: nn.Module, example: torch.Tensor) -> list[str]:
    names = list(getattr(module, 'output_names', ()) or ())
    if not names:
        with torch.no_grad():
            count = len(_as_list(module(example)))
        names = ['output'] if count == 1 else [f'output{i}' for i in range(count)]
    return names


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f'input size must be (H, W) with positive values, got {size}')
    return size  # type: ignore[return-value]


def _graph_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))


def export_dynamic(module: nn.Module, shape: Sequence[int] = (224, 224),
                   opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export ``module`` with a symbolic batch, height and width.

    Args:
        module: Eval-mode network whose ``forward(x)`` returns a tensor or a tuple of
            tensors, e.g. an :class:`ExportModule`. Output names are its
            ``output_names`` (else ``output`` / ``output<i>``).
        shape: (H, W) of the example input used for tracing.
        opset: ONNX opset of the graph.

    Returns:
        The ONNX model (in memory), input :data:`INPUT_NAME`.

    Raises:
        TrainTimeModelError: ``module`` holds a train-time LGC/SFR layer.
        ValueError: torch could not produce the requested opset.
    """
    check_deploy_form(module)
    shape = _check_size(shape)
    with _eval_mode(module):
        # Batch 2: torch.export specialises example sizes 0 and 1.
        example = _example_input(2, shape)
        program = torch.onnx.export(
            module, (example, ), None, dynamo=True, opset_version=opset,
            input_names=[INPUT_NAME], output_names=_output_names(module, example),
            dynamic_shapes=(dict(DYNAMIC_DIMS), ), verbose=False, optimize=True)
    model = program.model_proto
    got = _graph_opset(model)
    if got != opset:
        raise ValueError(f"torch's ONNX exporter could not convert the graph to opset "
                         f'{opset} (it is at opset {got}); use opset {got} or newer')
    split_repeated_scatter_adds(model)
    return model


def split_repeated_scatter_adds(model: onnx.ModelProto) -> int:
    """Rewrite every ``ScatterND(reduction='add')`` whose constant indices repeat as a
    chain of scatters with unique indices (in place).

    onnxruntime's CPU ScatterND (1.31) applies the index rows of one node in parallel;
    when an index repeats, two threads add into the same slice at once and one update can
    be lost (wrong, run-to-run varying results on large inputs). SFR indices repeat by
    design (several groups may reactivate one old channel), so scatter ``r`` of the chain
    adds the ``r``-th occurrence of every repeated index: exact, race-free, with
    ``Gather`` of the updates and integer initializers only.

    Args:
        model: An ONNX model (modified in place).

    Returns:
        The number of scatters rewritten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    rewritten, nodes, replaced = 0, [], set()
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        index = inits.get(node.input[1]) if node.op_type == 'ScatterND' else None
        if index is None or attrs.get('reduction') != b'add':
            nodes.append(node)
            continue
        rows = numpy_helper.to_array(index)
        keys = [tuple(r) for r in rows.reshape(len(rows), -1).tolist()]
        seen: Counter = Counter()
        rounds: list[list[int]] = []
        for pos, key in enumerate(keys):
            if seen[key] == len(rounds):
                rounds.append([])
            rounds[seen[key]].append(pos)
            seen[key] += 1
        if len(rounds) < 2:
            nodes.append(node)
            continue
        data, updates = node.input[0], node.input[2]
        replaced.add(node.input[1])
        for r, positions in enumerate(rounds):
            tag = f'{node.output[0]}__round{r}'
            graph.initializer.extend([
                numpy_helper.from_array(rows[positions], f'{tag}_indices'),
                numpy_helper.from_array(np.asarray(positions, dtype=np.int64),
                                        f'{tag}_positions')])
            out = node.output[0] if r == len(rounds) - 1 else tag
            nodes += [
                helper.make_node('Gather', [updates, f'{tag}_positions'], [f'{tag}_updates'],
                                 name=f'{tag}_gather', axis=0),
                helper.make_node('ScatterND', [data, f'{tag}_indices', f'{tag}_updates'],
                                 [out], name=f'{tag}_scatter', reduction='add')]
            data = out
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for n in graph.node for name in n.input}
        kept = [t for t in graph.initializer if t.name not in replaced or t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return rewritten


def specialise(model: onnx.ModelProto, batch_size: int | None = None,
               size: Sequence[int] | None = None) -> onnx.ModelProto:
    """Fix the symbolic input dims of a dynamic graph and fold its shape arithmetic.

    Args:
        model: A graph from :func:`export_dynamic` (not modified).
        batch_size: Fixed batch size, or None to keep the batch symbolic.
        size: Fixed (H, W), or None to keep them symbolic.

    Returns:
        A new model; with every dim fixed it has no ``Shape`` op left.
    """
    fixed = {} if batch_size is None else {0: int(batch_size)}
    if size is not None:
        fixed[2], fixed[3] = _check_size(size)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not fixed:
        return out
    dims = out.graph.input[0].type.tensor_type.shape.dim
    for axis, value in fixed.items():
        dims[axis].ClearField('dim_param')
        dims[axis].dim_value = value
    # Drop the shapes derived from the symbolic dims; the optimizer re-infers them.
    del out.graph.value_info[:]
    for value in out.graph.output:
        value.type.tensor_type.ClearField('shape')
    out = onnxscript.optimizer.optimize(out)
    out = onnx.shape_inference.infer_shapes(out, strict_mode=True, data_prop=True)
    _restore_output_dims(model, out, {DYNAMIC_DIMS[a] for a in fixed})
    return out


def _restore_output_dims(original: onnx.ModelProto, model: onnx.ModelProto,
                         fixed: set[str]) -> None:
    """Give ``model``'s outputs the symbolic dims of ``original`` that stay symbolic.

    Shape inference cannot express e.g. ``((height - 1)//2) + 1``; the exporter's
    expression is kept where it uses none of the ``fixed`` symbols.
    """
    pattern = re.compile(r'\b(' + '|'.join(map(re.escape, sorted(fixed))) + r')\b')
    for before, after in zip(original.graph.output, model.graph.output):
        old_dims = before.type.tensor_type.shape.dim
        new_shape = after.type.tensor_type.shape
        if len(new_shape.dim) != len(old_dims):
            continue
        for old, new in zip(old_dims, new_shape.dim):
            if new.HasField('dim_value'):
                continue
            if old.HasField('dim_value'):
                new.dim_value = old.dim_value
            elif old.dim_param and not pattern.search(old.dim_param):
                new.dim_param = old.dim_param


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
        >>> from mmsfr.models import ShuffleNetV2
        >>> module = ExportModule(ShuffleNetV2(arch='0.5x')).eval()
        >>> export_onnx(module, 'shufflenetv2.onnx', (224, 224))  # doctest: +SKIP
        PosixPath('shufflenetv2.onnx')
    """
    model = export_dynamic(module, shape, opset)
    model = specialise(model, None if dynamic_batch else batch_size,
                       None if dynamic_size else shape)
    with atomic_output(out) as tmp:
        _save(model, tmp)
    return Path(out)


def onnx_op_counts(model: onnx.ModelProto | str | os.PathLike) -> Counter:
    """Operator types of a graph (non-default domains as ``domain::Op``) and counts.

    Example:
        >>> onnx_op_counts('model.onnx').most_common(3)  # doctest: +SKIP
        [('Conv', 69), ('Transpose', 52), ('Relu', 50)]
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    return Counter(n.op_type if n.domain in ('', 'ai.onnx') else f'{n.domain}::{n.op_type}'
                   for n in model.graph.node)


# ----------------------------------------------------------------------------- verify
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
        >>> print(format_reports(reports))  # doctest: +SKIP
        graph    input        output  output shape  max|torch|  max rel diff  check
        dynamic  1x3x224x224  logits  1x1000        6.12e+00    3.10e-07      ok
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
        >>> sizes = [(224, 224), (256, 240)]
        >>> report = verify_onnx(module, 'model.onnx', sizes=sizes)  # doctest: +SKIP
        >>> report.passed, report.max_rel_diff  # doctest: +SKIP
        (True, 3.1e-07)
    """
    path = Path(path)
    onnx.checker.check_model(os.fspath(path), full_check=True)
    static = _static_dims(path)
    shapes = [(b, 3, *_check_size(s)) for b in batch_sizes for s in sizes]
    for shape in shapes:
        clash = {i: v for i, v in static.items() if shape[i] != v}
        if clash:
            raise ValueError(f'{path.name}: input {"x".join(map(str, shape))} does not fit its '
                             f'static input dims {static} (axis: size)')
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(os.fspath(path), options,
                                   providers=['CPUExecutionProvider'])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    report = VerificationReport(path, label or path.name, rtol)
    with _eval_mode(module):
        for shape in shapes:
            x = _example_input(shape[0], shape[2:], seed)
            with torch.no_grad():
                refs = _as_list(module(x))
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
    """
    h, w = _check_size(size)
    return h + 32, w + 16


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
        >>> module = load_export_module(  # doctest: +SKIP
        ...     'configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py',
        ...     'checkpoints/condensenetv2_a_deploy_in1k.pth')
        >>> result = export_verified(module, 'cdnv2_a.onnx', (224, 224))  # doctest: +SKIP
        >>> print(result.table())  # doctest: +SKIP
    """
    log = log or _silent
    out = check_output(out, *inputs)
    check_deploy_form(module)
    shape = _check_size(shape)
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    sizes = [_check_size(s) for s in (sizes or (shape, alternative_size(shape)))]
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
    return ExportResult(out, _graph_opset(final), onnx_op_counts(final), _input_dims(final),
                        tuple(o.name for o in final.graph.output), reports)
