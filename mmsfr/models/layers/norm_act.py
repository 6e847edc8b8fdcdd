"""BatchNorm and activation helpers of pre-activation layers, and :class:`PreActConv`.

Every mmsfr layer normalises with a BatchNorm built from an mmcv ``norm_cfg``
(:func:`build_norm`) and activates with an mmcv ``act_cfg`` (:func:`build_act`). In
inference the pair runs as tensors (:func:`norm_act`): an eval-mode BN is applied from
its current weight, bias and running statistics on every call, the activation in
place. Nothing derived from the weights is kept between calls.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .fast_path import inference_fast_path
from .grouped_conv import DEPTHWISE_MAX_OUT, EXPORT_DEPTHWISE_MAX_OUT, grouped_conv2d

__all__ = ['DEFAULT_NORM_CFG', 'EvalNorm', 'PreActConv', 'activate_', 'affine_act_',
           'bn_affine', 'build_act', 'build_norm', 'depthwise_export_routes', 'eval_affine',
           'eval_norm', 'eval_norm_act_', 'inplace_activation', 'is_plain_batchnorm',
           'norm_act']


def build_act(act_cfg: dict | None) -> nn.Module:
    """Build an activation from an mmcv config (``None`` gives identity).

    ``dict(type='HSwish')`` resolves to torch's fused ``nn.Hardswish``.
    """
    if act_cfg is None:
        return nn.Identity()
    return build_activation_layer(dict(act_cfg))


#: The norm config every mmsfr layer uses unless given another.
DEFAULT_NORM_CFG: dict = dict(type='BN')

#: ``forward`` methods that normalise as torch's ``BatchNorm2d`` (``SyncBatchNorm``
#: differs only in training with a process group, where it syncs batch statistics).
_PLAIN_BN_FORWARDS = (_BatchNorm.forward, nn.SyncBatchNorm.forward)


def build_norm(norm_cfg: dict, num_features: int, owner: str = '', *,
               device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> _BatchNorm:
    """Build the norm of a pre-activation layer from an mmcv norm config.

    Uses mmcv's ``build_norm_layer``, so ``requires_grad``, ``eps``, ``momentum`` and
    every registered BatchNorm type work as in mmdet configs (``'BN'``,
    ``'SyncBN'``, ...). The layers of mmsfr need a BatchNorm with affine parameters
    and running statistics for 4-D feature maps: their deploy conversion selects its
    per-channel parameters and statistics, the SFR starts from a zero norm weight.

    Args:
        norm_cfg: e.g. ``dict(type='BN')`` (:data:`DEFAULT_NORM_CFG`) or
            ``dict(type='SyncBN', requires_grad=True)``.
        num_features: Channels normalised.
        owner: The class that asks, for the error message.
        device / dtype: Where and in which dtype to create the parameters and buffers.

    Returns:
        The norm layer (the default config gives exactly ``nn.BatchNorm2d``).

    Raises:
        ValueError: naming the config, when it builds no such norm (not a dict with a
            ``type``, e.g. None; an unknown type; another kind of norm; no affine
            parameters or no running statistics; arguments the norm does not take).

    Example:
        >>> norm = build_norm(dict(type='SyncBN', requires_grad=False), 8)
        >>> type(norm).__name__, norm.num_features, norm.weight.requires_grad
        ('SyncBatchNorm', 8, False)
        >>> build_norm(dict(type='GN', num_groups=2), 8, 'Net')
        Traceback (most recent call last):
        ...
        ValueError: Net: norm_cfg=... names GroupNorm, not a BatchNorm; the norm must be ...
    """
    norm, problem = None, _norm_type_problem(norm_cfg)
    if problem is None:
        try:
            norm = build_norm_layer(dict(norm_cfg), num_features)[1]
        except Exception as err:  # noqa: BLE001 (e.g. TypeError for an unknown argument)
            problem = f'cannot be built ({type(err).__name__}: {err})'
        else:
            problem = _batchnorm_problem(norm)
    if problem is not None:
        raise ValueError(
            f'{owner or "build_norm"}: norm_cfg={norm_cfg!r} {problem}; the norm must be a '
            'BatchNorm for 4-D feature maps with affine parameters and running statistics '
            "(the deploy form selects them per channel), e.g. dict(type='BN') or "
            "dict(type='SyncBN', requires_grad=True)")
    if device is not None or dtype is not None:
        norm.to(device=device, dtype=dtype)
    return norm


def _norm_type_problem(norm_cfg: object) -> str | None:
    """What is wrong with the ``type`` of a norm config (as mmcv's
    ``build_norm_layer`` resolves it), or None for a BatchNorm class."""
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        return 'is not a dict with a "type" key'
    layer_type = norm_cfg['type']
    if isinstance(layer_type, type):
        cls = layer_type
    else:
        with MODELS.switch_scope_and_registry(None) as registry:
            cls = registry.get(layer_type) if isinstance(layer_type, str) else None
        if cls is None:
            return f'names no registered norm layer (type {layer_type!r})'
    if not (isinstance(cls, type) and issubclass(cls, _BatchNorm)):
        return f'names {getattr(cls, "__name__", cls)}, not a BatchNorm'
    return None


def _batchnorm_problem(norm: _BatchNorm) -> str | None:
    """Why a built BatchNorm cannot serve as the norm of an mmsfr layer, or None."""
    if not (norm.affine and norm.track_running_stats):
        return 'builds a BatchNorm without affine parameters or running statistics'
    try:
        norm._check_input_dim(torch.empty(1, 1, 1, 1, device='meta'))
    except ValueError:
        return f'builds {type(norm).__name__}, which does not take 4-D feature maps'
    return None


def is_plain_batchnorm(norm: nn.Module) -> bool:
    """Whether ``norm`` normalises in eval mode exactly as ``nn.BatchNorm2d`` does with
    its running statistics: a ``_BatchNorm`` (``BatchNorm2d``, ``SyncBatchNorm``,
    mmengine's ``_BatchNormXd``, ...) that keeps them and whose ``forward`` is
    torch's. Only such norms are folded, applied as tensors in the inference fast
    path or handed to the C++ kernels; any other norm runs as its module.

    Example:
        >>> is_plain_batchnorm(nn.SyncBatchNorm(4)), is_plain_batchnorm(nn.GroupNorm(2, 4))
        (True, False)
    """
    if not (isinstance(norm, _BatchNorm) and type(norm).forward in _PLAIN_BN_FORWARDS):
        return False
    buffers = norm._buffers  # (not through Module.__getattr__: this runs per layer call)
    return buffers.get('running_mean') is not None and buffers.get('running_var') is not None


#: Tensors from this size on (16 MB of float32) are normalised in place by
#: :func:`norm_act`: the size from which allocator page faults dominate (measured).
INPLACE_MIN_NUMEL = 1 << 22


def _hardswish_(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.hardswish(x, inplace=True)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def inplace_activation(act: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function computing ``act(x)`` that overwrites ``x`` for ReLU / hard-swish /
    identity (any other activation module is returned as it is)."""
    if isinstance(act, nn.ReLU):
        return torch.relu_
    if isinstance(act, nn.Hardswish):
        return _hardswish_
    if isinstance(act, nn.Identity):
        return _identity
    return act


def activate_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``, overwriting ``x`` for ReLU / hard-swish / identity (``x`` must be a
    temporary nobody else reads)."""
    return inplace_activation(act)(x)


#: An eval-mode BatchNorm as the tensors it applies: weight, bias, running mean,
#: running variance and eps.
EvalNorm = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]


def eval_norm(norm: nn.Module) -> EvalNorm | None:
    """The tensors of an eval-mode BatchNorm (None when it normalises with batch
    statistics, in training mode or without running statistics, or is not a plain
    BatchNorm, :func:`is_plain_batchnorm`)."""
    if norm.training or not is_plain_batchnorm(norm):
        return None
    # (The module's dicts directly: the kernels' arguments are collected this way for
    # every layer of every forward.)
    params, buffers = norm._parameters, norm._buffers
    return (params['weight'], params['bias'], buffers['running_mean'],
            buffers['running_var'], norm.eps)


def eval_norm_act_(x: torch.Tensor, norm: EvalNorm,
                   act_: Callable[[torch.Tensor], torch.Tensor],
                   owned: bool = False) -> torch.Tensor:
    """``act_(norm(x))`` for an eval-mode norm (:func:`eval_norm`) and an in-place
    activation (:func:`inplace_activation`); see :func:`norm_act` for ``owned``."""
    weight, bias, mean, var, eps = norm
    if owned and x.numel() >= INPLACE_MIN_NUMEL:
        scale, shift = bn_affine(weight, bias, mean, var, eps)
        shape = (-1,) + (1,) * (x.dim() - 2)
        return affine_act_(x, scale.view(shape), shift.view(shape), act_, owned=True)
    x = torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps,
                         torch.backends.cudnn.enabled)
    return act_(x)


def affine_act_(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                act_: Callable[[torch.Tensor], torch.Tensor],
                owned: bool = False) -> torch.Tensor:
    """``act_(x * scale + shift)`` with a per-channel ``scale`` and ``shift`` shaped
    ``(C, 1, 1)`` (an eval-mode BN as :func:`bn_affine` gives it); overwrites ``x`` if
    ``owned``.

    A multiply and an add in place run faster on CPU than ``torch.batch_norm`` and
    than one broadcasting ``addcmul``, at every size measured from 7x7 to detection
    maps, once the scale and shift are computed (an O(C) step; :func:`eval_norm_act_`
    does it on every call, from the BN's current tensors).

    Example:
        >>> bn = nn.BatchNorm2d(4).eval()
        >>> _ = nn.init.uniform_(bn.running_var, 0.5, 2.0)
        >>> scale, shift = (t.view(-1, 1, 1) for t in eval_affine(bn))
        >>> x = torch.randn(1, 4, 5, 5)
        >>> torch.allclose(affine_act_(x, scale, shift, torch.relu_), bn(x).relu(), atol=1e-6)
        True
    """
    y = x.mul_(scale) if owned else torch.mul(x, scale)
    return act_(y.add_(shift))


def norm_act(norm: nn.BatchNorm2d, act: nn.Module, x: torch.Tensor, *,
             owned: bool = False) -> torch.Tensor:
    """``act(norm(x))``; overwrites ``x`` when it is ``owned`` and nothing needs it.

    In :func:`~mmsfr.models.layers.inference_fast_path` the activation runs in place
    on the normalised tensor, and with an eval-mode BN a tensor the caller owns (a
    fresh intermediate) of at least ``INPLACE_MIN_NUMEL`` elements is normalised in
    place too, saving two full-size allocations per pre-activation unit: at detection
    input sizes fresh allocations cost page faults that exceed the arithmetic. Below
    that size the fused kernel of ``BatchNorm2d`` is faster.
    """
    if not inference_fast_path():
        return act(norm(x))
    args = eval_norm(norm)
    if args is None:
        return activate_(act, norm(x))
    return eval_norm_act_(x, args, inplace_activation(act), owned=owned)


def bn_affine(weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
              var: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of an eval-mode BatchNorm given as its tensors."""
    scale = weight * (var + eps).rsqrt()
    return scale, bias - mean * scale


def eval_affine(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``norm(x) == x * scale + shift`` per channel in eval mode."""
    return bn_affine(norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps)


class PreActConv(nn.Module):
    """BN -> activation -> conv (bias-free), the basic unit of dense networks.

    Args:
        in_channels: Input channels (the BN width).
        out_channels: Output channels.
        kernel_size: Conv kernel size.
        stride: Conv stride.
        groups: Conv groups.
        act_cfg: Activation config, e.g. ``dict(type='ReLU')`` or ``dict(type='HSwish')``.
        norm_cfg: Norm config (:func:`build_norm`), e.g. ``dict(type='SyncBN')``.

    Example:
        >>> PreActConv(16, 8, 3, groups=4)(torch.rand(1, 16, 8, 8)).shape
        torch.Size([1, 8, 8, 8])
    """

    #: Most outputs per group that the conv computes as depthwise passes
    #: (:func:`~.grouped_conv.grouped_conv2d`); :func:`depthwise_export_routes` sets it
    #: for an ONNX export.
    depthwise_max_out: int = DEPTHWISE_MAX_OUT

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, groups: int = 1,
                 act_cfg: dict | None = dict(type='ReLU'),
                 norm_cfg: dict = DEFAULT_NORM_CFG) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'{type(self).__name__}: groups={groups} must divide in_channels='
                             f'{in_channels} and out_channels={out_channels}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm = build_norm(norm_cfg, in_channels, type(self).__name__)
        self.act = build_act(act_cfg)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding=kernel_size // 2, groups=groups, bias=False)

    def forward(self, x: torch.Tensor, owned: bool = False,
                out: torch.Tensor | None = None) -> torch.Tensor:
        """``act(norm(x))`` convolved.

        Args:
            x: Input ``(N, C_in, H, W)``.
            owned: ``x`` is a temporary the layer may overwrite (see :func:`norm_act`).
            out: Where to write the result, e.g. a channel slice of a dense block's
                buffer (see :func:`~.grouped_conv.grouped_conv2d`).
        """
        conv = self.conv
        x = norm_act(self.norm, self.act, x, owned=owned)
        return grouped_conv2d(x, conv.weight, conv.stride[0], conv.padding[0], conv.groups,
                              out=out, depthwise_max_out=self.depthwise_max_out)


@contextlib.contextmanager
def depthwise_export_routes(model: nn.Module,
                            max_out: int = EXPORT_DEPTHWISE_MAX_OUT) -> Iterator[None]:
    """Within the context, every :class:`PreActConv` of ``model`` computes its grouped
    conv as depthwise passes + group sums up to ``max_out`` outputs per group (0: as
    one grouped conv always): the form an ONNX export writes, which onnxruntime runs
    faster than a grouped ``Conv`` with few outputs per group
    (:data:`~.grouped_conv.EXPORT_DEPTHWISE_MAX_OUT`). The results are the same up to
    float summation order; on exit the layers take PyTorch's routes again.

    Example:
        >>> conv = PreActConv(32, 16, 3, groups=4)  # 4 outputs per group
        >>> with depthwise_export_routes(conv):
        ...     conv.depthwise_max_out
        4
        >>> conv.depthwise_max_out
        2
    """
    if isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 0:
        raise ValueError(f'depthwise_max_out must be an int >= 0 (0: grouped convs '
                         f'everywhere), got {max_out!r}')
    layers = [m for m in model.modules() if isinstance(m, PreActConv)]
    # What each layer had (its own setting, or none: the class default), to put back.
    previous = [vars(layer).get('depthwise_max_out') for layer in layers]
    for layer in layers:
        layer.depthwise_max_out = max_out
    try:
        yield
    finally:
        for layer, value in zip(layers, previous):
            if value is None:
                del layer.depthwise_max_out
            else:
                layer.depthwise_max_out = value
