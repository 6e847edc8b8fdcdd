"""Model complexity in the two conventions used by the CondenseNet papers and mmsfr.

Counting happens at the aten level with a
:class:`~torch.utils._python_dispatch.TorchDispatchMode`, so functional calls
(``torch.relu``, ``x.mean``, ``nn.functional.conv2d``) are seen as well as modules.

Conventions (all are per forward pass of the given input; use batch 1 for per-image
numbers):

* ``conv_linear_macs``: multiply-adds of convolutions and matrix products
  (``nn.Linear``, ``mm``/``bmm``); biases, BatchNorm and element-wise ops are not
  counted. This is megvii's convention and mmengine's core one.
* ``paper_flops``: the CondenseNet papers' reference counter (``measure_model``):
  ``conv_linear_macs`` plus one op per output element of every ReLU / ReLU6 /
  hard-swish / hard-sigmoid, two ops per sigmoid (and SiLU) element, ``kernel area``
  ops per output element of an average pool and one op per input element of a
  global / adaptive average pool (``mean`` over the spatial dims). Max pooling,
  BatchNorm, additions, multiplications and concatenations count nothing, as in the
  reference.
* ``params``: all parameters; ``params_no_bn``: without BatchNorm parameters.

Models with learned group convolutions (LGC) or sparse feature reactivation (SFR) in
their train-time (masked) form are counted as their deploy form: a deep copy is
converted with :func:`~mmsfr.models.layers.convert_to_deploy`. If condensation has
not finished, the copy is first condensed to the end of the schedule; the deploy
structure (each LGC group keeps ``1/C`` of its inputs, each SFR group updates ``1/S``
of the old features) does not depend on which channels survive, so the counts are
those of the final model. Pass ``as_deploy=False`` to count the masked model as it
runs (dense 1x1 convs).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._python_dispatch import TorchDispatchMode

from ..models.deploy import convert_to_deploy, pending_deploy
from ..models.layers import condensing_layers

__all__ = ['ComplexityCounter', 'config_forward', 'count_complexity', 'count_mmengine', 'count_params',
           'to_deploy_form', 'format_count']

aten = torch.ops.aten

# Element-wise activations: ops per output element (paper convention).
_ACT_OPS: dict[str, int] = {
    'relu': 1, 'relu_': 1, 'relu6': 1, 'hardtanh': 1, 'hardtanh_': 1,
    'hardswish': 1, 'hardswish_': 1, 'hardsigmoid': 1, 'hardsigmoid_': 1,
    'sigmoid': 2, 'sigmoid_': 2, 'silu': 2, 'silu_': 2,
}
_AVG_POOLS = ('avg_pool1d', 'avg_pool2d', 'avg_pool3d')
_ADAPTIVE_POOLS = ('_adaptive_avg_pool2d', '_adaptive_avg_pool3d', 'adaptive_avg_pool1d')


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


class ComplexityCounter(TorchDispatchMode):
    """Dispatch mode that accumulates multiply-adds and element ops of aten calls.

    Attributes:
        conv_linear_macs: Multiply-adds of convolutions and matrix products.
        act_ops: Activation element ops (ReLU family 1, sigmoid family 2 per element).
        pool_ops: Average-pooling ops (kernel area per output element; input
            elements for global / adaptive pools).

    Example:
        >>> conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        >>> with ComplexityCounter() as counter:
        ...     _ = torch.relu(conv(torch.rand(1, 3, 4, 4)))
        >>> counter.conv_linear_macs, counter.act_ops
        (3456, 128)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv_linear_macs = 0
        self.act_ops = 0
        self.pool_ops = 0

    @property
    def paper_flops(self) -> int:
        """MACs plus activation and pooling element ops (the papers' convention)."""
        return self.conv_linear_macs + self.act_ops + self.pool_ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._overloadpacket.__name__
        if name in ('convolution', '_convolution', 'convolution_overrideable',
                    'mkldnn_convolution', 'cudnn_convolution', '_slow_conv2d_forward'):
            self.conv_linear_macs += self._conv_macs(func, args, kwargs, out)
        elif name in ('mm', 'addmm', 'bmm', 'baddbmm', 'addbmm'):
            a, b = (args[0], args[1]) if name in ('mm', 'bmm') else (args[1], args[2])
            batch = a.shape[0] if a.dim() == 3 else 1
            self.conv_linear_macs += batch * a.shape[-2] * a.shape[-1] * b.shape[-1]
        elif name in _ACT_OPS:
            self.act_ops += _ACT_OPS[name] * _numel(_first_tensor(out))
        elif name in _AVG_POOLS:
            kernel = args[1] if len(args) > 1 else kwargs['kernel_size']
            kernel = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
            dims = int(name[len('avg_pool')])
            if len(kernel) == 1:
                kernel = kernel * dims
            self.pool_ops += _numel(out) * math.prod(kernel)
        elif name in _ADAPTIVE_POOLS:
            self.pool_ops += _numel(args[0])
        elif name == 'mean' and len(args) > 1 and args[0].dim() >= 3:
            dims = [d % args[0].dim() for d in args[1]] if args[1] is not None else []
            if dims and min(dims) >= 2:  # spatial mean = global average pooling
                self.pool_ops += _numel(args[0])
        return out

    @staticmethod
    def _conv_macs(func, args, kwargs, out) -> int:
        weight = args[1]
        if func._overloadpacket.__name__ in ('convolution', '_convolution'):
            transposed = bool(args[6]) if len(args) > 6 else kwargs.get('transposed', False)
        else:
            transposed = False
        out_t = _first_tensor(out)
        if out_t is None:
            return 0
        if transposed:
            # weight (in, out/groups, k...): every input element meets out/groups * k taps.
            return args[0].numel() * math.prod(weight.shape[1:])
        # weight (out, in/groups, k...): every output element costs in/groups * k MACs.
        return out_t.numel() * math.prod(weight.shape[1:])


def _default_forward(model: nn.Module, inputs: torch.Tensor) -> Any:
    return model(inputs)


def _dummy_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, ) + shape
    if len(shape) < 3:
        raise ValueError(f'input_shape must be (C, H, W) or (N, C, H, W), got {input_shape}')
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    generator = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=generator).to(device)


def to_deploy_form(model: nn.Module) -> nn.Module:
    """Return ``model`` itself if it is in deploy form, else a converted deep copy.

    A model needs converting if a part of it is in a train-time form that is another
    network (:func:`~mmsfr.models.deploy.pending_deploy` with
    ``network_changes_only``: masked LGC/SFR layers, an unpruned condensing
    classifier); unfused conv -> BN pairs are counted as they are. The copy is made
    with :func:`copy.deepcopy`; unfinished condensation is completed on the copy
    (``condense(1.0)``) before :func:`~mmsfr.models.deploy.convert_to_deploy`. The
    original is never modified.

    Args:
        model: Any model.

    Returns:
        A model whose mmsfr layers are all in deploy form.

    Example:
        >>> from mmsfr.models import CondenseNetV2
        >>> deployed = to_deploy_form(CondenseNetV2(arch='a'))
        >>> deployed.deploy
        True
    """
    if not pending_deploy(model, network_changes_only=True):
        return model
    model = copy.deepcopy(model)
    for _, layer in condensing_layers(model):
        if not layer.fully_condensed:
            layer.condense(1.0)
    convert_to_deploy(model)
    return model


def count_params(model: nn.Module) -> dict[str, int]:
    """Count parameters, with and without BatchNorm layers.

    Args:
        model: Any model (counted as it is; see :func:`to_deploy_form`).

    Returns:
        ``{'params': ..., 'params_no_bn': ...}``.

    Example:
        >>> count_params(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
        {'params': 24, 'params_no_bn': 16}
    """
    total = sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for m in model.modules() if isinstance(m, _BatchNorm)
             for p in m.parameters(recurse=False))
    return {'params': total, 'params_no_bn': total - bn}


def count_complexity(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224), *,
                     forward: Callable[[nn.Module, torch.Tensor], Any] | None = None,
                     as_deploy: bool = True) -> dict[str, int]:
    """Count a model's complexity in both conventions (see the module docstring).

    The model is run once, in eval mode and without gradients, on uniform random
    numbers of ``input_shape`` (seed 0, so data-dependent parts such as a detector's
    proposals are reproducible); its training mode is restored afterwards.

    Args:
        model: The model. Train-time LGC/SFR layers are counted in deploy form unless
            ``as_deploy`` is False.
        input_shape: ``(C, H, W)`` (batch 1 is added) or ``(N, C, H, W)``.
        forward: ``forward(model, inputs)`` runs the model; default ``model(inputs)``.
            Detectors need e.g. ``lambda m, x: m._forward(x, data_samples)``.
        as_deploy: Count LGC/SFR layers in their deploy form (default) or as they run.

    Returns:
        ``conv_linear_macs``, ``act_ops``, ``pool_ops``, ``paper_flops``
        (``conv_linear_macs + act_ops + pool_ops``), ``params`` and ``params_no_bn``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8),
        ...                     nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(8, 10))
        >>> counts = count_complexity(net, (3, 10, 10))
        >>> counts['conv_linear_macs'], counts['act_ops'], counts['pool_ops']
        (13904, 512, 512)
        >>> counts['paper_flops'], counts['params'], counts['params_no_bn']
        (14928, 322, 306)
    """
    target = to_deploy_form(model) if as_deploy else model
    inputs = _dummy_input(target, input_shape)
    run = forward or _default_forward
    was_training = target.training
    target.eval()
    try:
        with torch.no_grad(), ComplexityCounter() as counter:
            run(target, inputs)
    finally:
        target.train(was_training)
    counts = {
        'conv_linear_macs': int(counter.conv_linear_macs),
        'act_ops': int(counter.act_ops),
        'pool_ops': int(counter.pool_ops),
        'paper_flops': int(counter.paper_flops),
    }
    counts.update(count_params(target))
    return counts


class _TracedForward(nn.Module):
    """Wraps ``forward(model, inputs)`` as a module for mmengine's jit tracer."""

    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, torch.Tensor], Any]):
        super().__init__()
        self.model = model
        self._run = forward

    def forward(self, inputs: torch.Tensor) -> Any:
        return self._run(self.model, inputs)


def count_mmengine(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224), *,
                   forward: Callable[[nn.Module, torch.Tensor], Any] | None = None,
                   as_deploy: bool = True) -> dict[str, int]:
    """Count with mmengine's analyzer (what ``get_model_complexity_info`` reports).

    mmengine traces the model with ``torch.jit`` and counts conv / linear multiply-adds
    plus, by default, two ops per BatchNorm element in eval mode (and a few others,
    e.g. upsampling). ``flops_no_bn`` removes its ``batch_norm`` share.

    Args:
        model: The model (converted to deploy form as in :func:`count_complexity`).
        input_shape: ``(C, H, W)`` or ``(N, C, H, W)``.
        forward: ``forward(model, inputs)``, as in :func:`count_complexity`.
        as_deploy: Count LGC/SFR layers in their deploy form.

    Returns:
        ``{'flops': ..., 'flops_no_bn': ..., 'params': ...}``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8))
        >>> count_mmengine(net, (3, 10, 10))
        {'flops': 14848, 'flops_no_bn': 13824, 'params': 232}
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count

    target = to_deploy_form(model) if as_deploy else model
    inputs = _dummy_input(target, input_shape)
    wrapped = _TracedForward(target, forward or _default_forward)
    was_training = target.training
    target.eval()
    try:
        with torch.no_grad():
            analyzer = FlopAnalyzer(wrapped, (inputs, ))
            analyzer.unsupported_ops_warnings(False)
            analyzer.uncalled_modules_warnings(False)
            total = int(analyzer.total())
            bn = int(analyzer.by_operator().get('batch_norm', 0))
    finally:
        target.train(was_training)
    return {'flops': total, 'flops_no_bn': total - bn,
            'params': int(parameter_count(target)[''])}


def format_count(value: float, unit: str | None = None, digits: int = 2) -> str:
    """Format a count with an M or G suffix.

    Args:
        value: The count.
        unit: ``'M'``, ``'G'`` or None (G from 1e9 on, else M).
        digits: Decimals.

    Example:
        >>> format_count(43_123_456), format_count(2.5e9), format_count(1e6, 'G', 3)
        ('43.12M', '2.50G', '0.001G')
    """
    if unit is None:
        unit = 'G' if abs(value) >= 1e9 else 'M'
    scale = {'M': 1e6, 'G': 1e9}[unit]
    return f'{value / scale:.{digits}f}{unit}'


def _is_detector(model: nn.Module) -> bool:
    try:
        from mmdet.models.detectors import BaseDetector
    except ImportError:  # pragma: no cover - mmdet is a dependency of mmsfr
        return False
    return isinstance(model, BaseDetector)


def config_forward(model: nn.Module, cfg: Any, hw: tuple[int, int]
                   ) -> tuple[tuple[int, int], Callable[[nn.Module, torch.Tensor], Any]]:
    """The (padded) input size and a ``forward(model, inputs)`` to count a config's model.

    Detectors get dummy ``DetDataSample`` metainfo and run whole with
    ``mode='tensor'`` (no post-processing of the final outputs) on an input padded to
    the data preprocessor's ``pad_size_divisor``; other models are called as
    ``model(inputs)``.

    Args:
        model: The model built from ``cfg``.
        cfg: Its mmengine config (for the data preprocessor).
        hw: Requested input height and width.

    Example:
        >>> hw, fwd = config_forward(nn.Conv2d(3, 4, 1), {}, (7, 9))
        >>> hw
        (7, 9)
    """
    if not _is_detector(model):
        return hw, lambda m, x: m(x)
    from mmdet.structures import DetDataSample

    preprocessor = cfg['model'].get('data_preprocessor') or {}
    divisor = int(preprocessor.get('pad_size_divisor', 1) or 1)
    padded = tuple(int(math.ceil(s / divisor) * divisor) for s in hw)
    sample = DetDataSample(metainfo=dict(
        img_shape=hw, ori_shape=hw, pad_shape=padded, batch_input_shape=padded,
        scale_factor=(1.0, 1.0)))

    def forward(m: nn.Module, x: torch.Tensor) -> Any:
        return m(x, [sample] * x.shape[0], mode='tensor')

    return padded, forward
