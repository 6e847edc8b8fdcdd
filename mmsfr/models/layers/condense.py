"""Learned group convolution (LGC) and sparse feature reactivation (SFR).

Both layers are pre-activation convolutions (BN -> activation -> conv) whose dense
train-time weight is multiplied by a 0/1 mask that condensation prunes step by step.
They differ only in which axis forms the groups:

* **LGC** (CondenseNet): output filter ``o`` belongs to group ``o % G``; each group
  drops the *input* channels with the lowest L1 importance (summed over the group's
  filters), ``in / C`` per stage, until it keeps ``in / C`` of them.
* **SFR** (CondenseNetV2): input channel ``j`` belongs to group ``j % G``; each group
  drops the *output* channels (the old features it would reactivate) with the lowest
  importance, ``out / S`` per stage, until it keeps ``out / S`` of them.

Importance of a weight is ``max |w|`` over its kernel (equal to ``|w|`` for 1x1 convs,
the CondenseNetV2 paper's footnote 2 for larger kernels).

The schedule (:func:`condensation_stage`) splits the first half of training into
``factor - 1`` stages; entering stage ``s`` means ``s`` slices are pruned. Every layer
catches up on all stages it skipped, so a coarse progress signal can never leave a
layer with fewer pruned slices than its stage counter claims.

Each layer has a deploy form built by :meth:`switch_to_deploy` (or directly with
``deploy=True``): LGC becomes index-select -> BN -> act -> grouped conv -> shuffle; SFR
becomes BN -> act -> input shuffle -> grouped conv -> ``index_add`` into the old
features. Both are exact in eval mode. The 1x1 grouped convs run as one batched GEMM
whose strides absorb the shuffles (:mod:`.grouped_conv`); the weights keep the layout
of the released converted files.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .grouped_conv import grouped_conv2d, grouped_pointwise, inference_fast_path
from .shuffle import channel_shuffle
from ...utils.compat import is_exporting


def condensation_stage(progress: float, factor: int) -> int:
    """Return the condensation stage reached at a training progress.

    Stage ``s`` (0 <= s <= factor - 1) means ``s`` slices of ``1 / factor`` are pruned;
    stage ``factor - 1`` (density ``1 / factor``) is reached at half of training.

    Args:
        progress: Fraction of training done, in [0, 1] (values above 1 clamp).
        factor: Condense factor C (LGC) or sparse factor S (SFR).

    Example:
        >>> [condensation_stage(p, 4) for p in (0.0, 0.16, 0.17, 0.34, 0.5, 0.9)]
        [0, 0, 1, 2, 3, 3]
    """
    if factor < 1:
        raise ValueError(f'condense factor must be >= 1, got {factor}')
    if progress < 0:
        raise ValueError(f'training progress must be >= 0, got {progress}')
    if factor == 1:
        return 0
    # Small epsilon: progress = iter / max_iters is exact at stage boundaries only up
    # to float rounding.
    return min(factor - 1, math.floor(2 * progress * (factor - 1) + 1e-9))


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
    return (isinstance(norm, _BatchNorm) and type(norm).forward in _PLAIN_BN_FORWARDS
            and norm.running_mean is not None and norm.running_var is not None)


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
    return norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps


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
        return grouped_conv2d(x, conv.weight, conv.stride[0],
                              conv.padding[0], conv.groups, out=out)


class CondensingConv(nn.Module):
    """Shared machinery of LGC and SFR: mask, stage counters, pruning, conversion.

    Subclasses set :attr:`group_axis` (``'out'`` for LGC, ``'in'`` for SFR) and
    implement the deploy form. Not meant to be used directly.

    Buffers (part of the state_dict, so resuming continues exactly):
        ``_mask``: 0/1, the weight's shape. ``_stage``: stages done. ``_count``: number
        of pruned channels per group (kept for compatibility with released files).
        The deploy form's ``index`` (int64) is a buffer too: it follows ``.to()``.

    The norm is built from ``norm_cfg`` (:func:`build_norm`) in both forms; the
    conversion builds the deploy form's modules from it, on the device and in the
    dtype of the train-time ones.
    """

    group_axis: str = ''

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 groups: int = 1, factor: int = 1,
                 act_cfg: dict | None = dict(type='ReLU'), deploy: bool = False,
                 norm_cfg: dict = DEFAULT_NORM_CFG) -> None:
        super().__init__()
        name = type(self).__name__
        pruned = out_channels if self.group_axis == 'in' else in_channels
        grouped = in_channels if self.group_axis == 'in' else out_channels
        for what, value, total in (('groups', groups, grouped), ('factor', factor, pruned)):
            if value < 1 or total % value:
                raise ValueError(f'{name}: {what}={value} must be >= 1 and divide '
                                 f'{total} channels (in={in_channels}, out={out_channels})')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.groups = groups
        self.factor = factor
        self.act_cfg = act_cfg
        self.norm_cfg = norm_cfg
        self.deploy = deploy
        if deploy:
            self._build_deploy()
        else:
            self.norm = build_norm(norm_cfg, in_channels, name)
            self.act = build_act(act_cfg)
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size,
                                  padding=kernel_size // 2, bias=False)
            self.register_buffer('_count', torch.zeros(1))
            self.register_buffer('_stage', torch.zeros(1))
            self.register_buffer('_mask', torch.ones_like(self.conv.weight))

    # ----------------------------------------------------------------- train time
    @property
    def stage(self) -> int:
        """Number of condensation stages applied so far."""
        return int(self._stage.item())

    @property
    def fully_condensed(self) -> bool:
        return self.deploy or self.stage >= self.factor - 1

    @property
    def _slice(self) -> int:
        """Channels each group prunes per stage."""
        pruned = self.out_channels if self.group_axis == 'in' else self.in_channels
        return pruned // self.factor

    def _grouped_view(self, t: torch.Tensor) -> torch.Tensor:
        """(out, in) -> (grouped axis, pruned axis)."""
        return t.t() if self.group_axis == 'in' else t

    def live_pattern(self) -> torch.Tensor:
        """Bool (groups, pruned-axis size): which channels each group still uses."""
        mask = self._grouped_view(self._mask[:, :, 0, 0])
        return mask[:self.groups] > 0

    @torch.no_grad()
    def condense(self, progress: float) -> int:
        """Prune every stage due at ``progress`` that is not done yet.

        Returns:
            The number of stages applied by this call.
        """
        if self.deploy:
            return 0
        target = condensation_stage(progress, self.factor)
        applied = 0
        while self.stage < target:
            self._prune_one_stage()
            self._stage += 1
            self._count += self._slice
            applied += 1
        return applied

    def _prune_one_stage(self) -> None:
        importance = (self.conv.weight * self._mask).abs().amax(dim=(2, 3))
        importance = self._grouped_view(importance)  # (grouped, pruned)
        rows, cols = importance.shape
        # Row r belongs to group r % G: (rows / G, G, cols) -> per-group column scores.
        score = importance.reshape(rows // self.groups, self.groups, cols).sum(0)
        live = self.live_pattern()
        score = score.masked_fill(~live, float('inf'))
        drop = torch.sort(score, dim=1, stable=True).indices[:, :self._slice]
        pattern = live.clone()
        pattern.scatter_(1, drop, False)
        full = pattern.repeat(rows // self.groups, 1).to(self._mask.dtype)
        full = self._grouped_view(full)[:, :, None, None].expand_as(self._mask)
        self._mask.copy_(full)

    def masked_weight(self) -> torch.Tensor:
        return self.conv.weight * self._mask

    def kept_channels(self) -> list[torch.Tensor]:
        """Per group, the ascending indices of the channels it keeps."""
        return [torch.nonzero(row).flatten() for row in self.live_pattern()]

    def check_condensed(self, name: str = '') -> None:
        """Raise ``RuntimeError`` unless condensation has finished (and ``ValueError``
        unless the mask has the structure it gives, :meth:`check_mask_structure`)."""
        if not self.fully_condensed:
            raise RuntimeError(
                f'{type(self).__name__} {name or ""} is at condensation stage {self.stage} '
                f'of {self.factor - 1}: finish training (progress >= 0.5) before '
                'converting to the deploy form'.replace('  ', ' '))
        self.check_mask_structure(name)

    def check_mask_structure(self, name: str = '') -> None:
        """Raise ``ValueError`` unless ``_mask`` has the structure condensation gives it.

        The conversion relies on it: a 0/1 mask, equal at every kernel position, the
        same channels for every row of a group (``g, g + G, ...`` along the grouped
        axis), and ``pruned - stage * slice`` channels kept per group, as the stage
        counter says.
        """
        if self.deploy:
            return
        mask = self._mask
        grouped = self._grouped_view(mask[:, :, 0, 0])
        rows, cols = grouped.shape
        blocks = grouped.reshape(rows // self.groups, self.groups, cols)
        kept = sorted(set(blocks[0].sum(1).int().tolist()))
        expected = cols - self.stage * self._slice
        if not torch.all((mask == 0) | (mask == 1)):
            problem = 'holds values other than 0 and 1'
        elif not torch.equal(mask, mask[:, :, :1, :1].expand_as(mask)):
            problem = 'differs between kernel positions'
        elif not torch.equal(blocks, blocks[:1].expand_as(blocks)):
            problem = (f'gives rows of one group different channels (row r is in group '
                       f'r % {self.groups})')
        elif kept != [expected]:
            problem = (f'keeps {kept} channels per group where stage {self.stage} (factor '
                       f'{self.factor}) means {expected}')
        else:
            return
        raise ValueError(
            f'{type(self).__name__} {name}: its mask {problem}; condensation does not make '
            'such masks, so the layer cannot be converted exactly (the checkpoint was '
            'edited or damaged)'.replace(' :', ':'))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        has_mask = prefix + '_mask' in state_dict
        has_index = prefix + 'index' in state_dict
        if self.deploy and has_mask or not self.deploy and has_index:
            given = 'train-time (masked)' if has_mask else 'deploy (converted)'
            wanted = 'deploy' if self.deploy else 'train-time'
            raise ValueError(
                f'{prefix.rstrip(".")}: the checkpoint holds the {given} form but the model '
                f'is built in its {wanted} form; use the matching config '
                '(*_deploy_*.py for converted weights) or convert with tools/convert_to_deploy.py')
        if has_mask and prefix + '_count' in state_dict and prefix + '_stage' in state_dict:
            stage = int(state_dict[prefix + '_stage'].item())
            count = int(state_dict[prefix + '_count'].item())
            if count != stage * self._slice:
                raise ValueError(
                    f'{prefix.rstrip(".")}: the checkpoint pruned {count} channels per group in '
                    f'{stage} stages, which does not fit factor={self.factor} (slices of '
                    f'{self._slice}); resume with the condense/sparse factor it was trained with')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    # ----------------------------------------------------------------- deploy
    def _build_deploy(self, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> None:
        """Create the deploy form's norm, activation, conv and ``index`` buffer (on
        ``device``, floating-point tensors in ``dtype``)."""
        raise NotImplementedError

    @torch.no_grad()
    def switch_to_deploy(self, name: str = '') -> None:
        """Convert in place to the exact deploy form (eval-mode equivalent).

        The new modules are built from ``norm_cfg`` on the device and in the dtype of
        the train-time ones, and their parameters keep ``requires_grad``.
        """
        if self.deploy:
            return
        self.check_condensed(name)
        old_norm, old_conv, kept = self.norm, self.conv, self.kept_channels()
        del self.norm, self.conv, self._mask, self._count, self._stage
        self.deploy = True
        weight = old_conv.weight
        self._build_deploy(weight.device, weight.dtype)
        self.norm.to(dtype=old_norm.weight.dtype)  # e.g. a float32 norm in a half model
        self._fill_deploy(old_norm, weight.detach(), kept)
        for new, old in ((self.norm, old_norm), (self.conv, old_conv)):
            for param, old_param in zip(new.parameters(), old.parameters()):
                param.requires_grad_(old_param.requires_grad)
        self.train(self.training)  # new submodules start in training mode

    def _fill_deploy(self, norm: _BatchNorm, weight: torch.Tensor,
                     kept: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'groups={self.groups}, factor={self.factor}, deploy={self.deploy}')


class LearnedGroupConv(CondensingConv):
    """Learned group convolution: BN -> act -> 1x1 conv with learned sparse inputs.

    Args:
        in_channels: Input channels ``i``.
        out_channels: Output channels (``4k`` in a dense layer).
        kernel_size: Kernel size (1 in CondenseNets).
        groups: Filter groups G (output ``o`` is in group ``o % G``).
        factor: Condense factor C; each group finally keeps ``i / C`` inputs.
        act_cfg: Activation config.
        deploy: Build the converted form (index-select, grouped conv, shuffle).
        norm_cfg: Norm config (:func:`build_norm`).

    Example:
        >>> lgc = LearnedGroupConv(32, 16, groups=4, factor=4).eval()
        >>> _ = lgc.condense(progress=0.5)  # prune all 3 stages
        >>> x = torch.rand(1, 32, 5, 5)
        >>> y = lgc(x)
        >>> lgc.switch_to_deploy()
        >>> torch.allclose(lgc(x), y, atol=1e-6)
        True
    """

    group_axis = 'out'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            x = norm_act(self.norm, self.act, x.index_select(1, self.index), owned=True)
            if self.kernel_size == 1:  # the output shuffle is folded into the GEMM
                return grouped_pointwise(x, self.conv.weight, self.groups,
                                         shuffle_output=True)
            return channel_shuffle(self.conv(x), self.groups)
        x = self.act(self.norm(x))
        return nn.functional.conv2d(x, self.masked_weight(), None, 1, self.kernel_size // 2)

    @property
    def selected_channels(self) -> int:
        return self.groups * self.in_channels // self.factor

    def _build_deploy(self, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> None:
        n = self.selected_channels
        # Until weights are loaded: group g reads a contiguous block of inputs (a plain
        # group conv when G == C), so a deploy model built from scratch is usable.
        self.register_buffer('index', torch.arange(n, device=device) % self.in_channels)
        self.norm = build_norm(self.norm_cfg, n, type(self).__name__, device=device,
                               dtype=dtype)
        self.act = build_act(self.act_cfg)
        self.conv = nn.Conv2d(n, self.out_channels, self.kernel_size,
                              padding=self.kernel_size // 2, groups=self.groups, bias=False,
                              device=device, dtype=dtype)

    def _fill_deploy(self, norm, weight, kept):
        g_, d_out = self.groups, self.out_channels // self.groups
        index = torch.cat(kept)
        self.index.copy_(index)
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            getattr(self.norm, name).data.copy_(getattr(norm, name).data[index])
        self.norm.num_batches_tracked.copy_(norm.num_batches_tracked)
        # New filter g * d_out + k is the original filter g + k * G (restored by the
        # output shuffle); it sees only its group's kept inputs.
        rows = [weight[g::g_][:, kept[g]] for g in range(g_)]
        self.conv.weight.data.copy_(torch.cat(rows).reshape(self.conv.weight.shape))
        assert rows[0].shape[0] == d_out


class SparseFeatureReactivation(CondensingConv):
    """Sparse feature reactivation: ``old + conv(act(BN(new)))`` with learned sparsity.

    The module takes the new features ``x`` (k channels) and the old features
    (``out_channels`` of them) and returns the reactivated old features.

    Args:
        in_channels: Channels of the new features (growth rate k).
        out_channels: Channels of the old features to reactivate.
        kernel_size: 1 in CondenseNetV2, 3 in the SFR ShuffleNets.
        groups: Input groups G (input ``j`` is in group ``j % G``).
        factor: Sparse factor S; each group finally updates ``out / S`` old channels.
        act_cfg: Activation config.
        deploy: Build the converted form (shuffle, grouped conv, ``index_add``).
        norm_cfg: Norm config (:func:`build_norm`).

    Example:
        >>> sfr = SparseFeatureReactivation(8, 24, groups=4, factor=4).eval()
        >>> _ = sfr.condense(progress=1.0)
        >>> new, old = torch.rand(1, 8, 5, 5), torch.rand(1, 24, 5, 5)
        >>> y = sfr(new, old)
        >>> sfr.switch_to_deploy()
        >>> torch.allclose(sfr(new, old), y, atol=1e-6)
        True
    """

    group_axis = 'in'

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.deploy:
            # Start as identity: the reactivation grows from zero (reference init).
            nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            if is_exporting():
                # The same sum, as old + scatter-add into zeros: onnxscript's optimizer
                # (0.7) takes a ScatterND(add) whose indices cover the whole axis in
                # order (a freshly built deploy SFR) for a copy of its updates, which is
                # right only when the scattered-into tensor is zero.
                return old + torch.zeros_like(old).index_add(1, self.index, self.update(x))
            return old.index_add(1, self.index, self.update(x))
        return old + self.update(x)

    def reactivate_(self, x: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """In-place :meth:`forward`: add the reactivation into ``old`` and return it.

        For inference with pre-allocated dense-block buffers (``old`` may be a view).
        """
        update = self.update(x)
        if not self.deploy:
            return old.add_(update)
        return index_add_channels_(old, self.index, update)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """The values added to the old features: one channel per ``index`` entry in the
        deploy form, a dense ``out_channels`` tensor in the train-time form."""
        x = norm_act(self.norm, self.act, x)
        if not self.deploy:
            pad = self.kernel_size // 2
            return nn.functional.conv2d(x, self.masked_weight(), None, 1, pad)
        # Group g's inputs are channels g, g + G, ...
        if self.kernel_size == 1:  # read them through the GEMM's strides
            return grouped_pointwise(x, self.conv.weight, self.groups, strided_input=True)
        if self.in_channels != self.groups:  # one input per group needs no shuffle
            x = channel_shuffle(x, self.in_channels // self.groups)
        return self.conv(x)

    @property
    def reactivated_channels(self) -> int:
        return self.groups * self.out_channels // self.factor

    def _build_deploy(self, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> None:
        n = self.reactivated_channels
        # Until weights are loaded: group g updates a contiguous block of old channels.
        self.register_buffer('index', torch.arange(n, device=device) % self.out_channels)
        self.norm = build_norm(self.norm_cfg, self.in_channels, type(self).__name__,
                               device=device, dtype=dtype)
        self.act = build_act(self.act_cfg)
        self.conv = nn.Conv2d(self.in_channels, n, self.kernel_size,
                              padding=self.kernel_size // 2, groups=self.groups, bias=False,
                              device=device, dtype=dtype)

    def _fill_deploy(self, norm, weight, kept):
        self.norm.load_state_dict(norm.state_dict())
        self.index.copy_(torch.cat(kept))
        # Output g * (out / S) + q is old channel kept[g][q], fed by group g's inputs.
        rows = [weight[kept[g]][:, g::self.groups] for g in range(self.groups)]
        self.conv.weight.data.copy_(torch.cat(rows))


def index_add_channels_(old: torch.Tensor, index: torch.Tensor,
                        values: torch.Tensor) -> torch.Tensor:
    """``old[:, index[j]] += values[:, j]`` in place (repeated indices accumulate).

    Per image, ``index_add_`` along the leading dim of a (C, H * W) view: one
    contiguous row add per index, much faster than along dim 1. Every image of ``old``
    must be contiguous (a channel slice of a single image is).
    """
    images = ((old, values),) if old.shape[0] == 1 else zip(old, values)
    for image, rows in images:
        image.view(image.shape[-3], -1).index_add_(0, index, rows.reshape(rows.shape[-3], -1))
    return old


class CondensingLinear(nn.Module):
    """Linear layer whose deploy form reads only its strongest inputs (CondenseNet v1).

    On conversion the ``keep_ratio`` fraction of input features with the largest L1
    norm (summed over outputs) is kept: deploy = ``index_select`` -> smaller Linear.
    This changes the output (it is a pruning, as in the reference CondenseNet), unlike
    the LGC/SFR conversions, which are exact.

    Args:
        in_features: Input features.
        out_features: Output features.
        keep_ratio: Fraction of inputs kept by the deploy form.
        deploy: Build the deploy form.

    Example:
        >>> fc = CondensingLinear(8, 3, keep_ratio=0.5)
        >>> fc.switch_to_deploy()
        >>> fc.linear.weight.shape, fc.index.shape
        (torch.Size([3, 4]), torch.Size([4]))
    """

    def __init__(self, in_features: int, out_features: int, keep_ratio: float = 0.5,
                 deploy: bool = False) -> None:
        super().__init__()
        if not 0 < keep_ratio <= 1:
            raise ValueError(f'CondensingLinear: keep_ratio={keep_ratio} must be in (0, 1]')
        self.in_features = in_features
        self.out_features = out_features
        self.keep_ratio = keep_ratio
        self.deploy = deploy
        kept = int(in_features * keep_ratio) if deploy else in_features
        self.linear = nn.Linear(kept, out_features)
        if deploy:
            self.register_buffer('index', torch.zeros(kept, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            x = x.index_select(1, self.index)
        return self.linear(x)

    @torch.no_grad()
    def switch_to_deploy(self, name: str = '') -> None:
        if self.deploy:
            return
        kept = int(self.in_features * self.keep_ratio)
        order = self.linear.weight.abs().sum(0).sort(stable=True).indices
        index = order[self.in_features - kept:]
        old = self.linear
        self.linear = nn.Linear(kept, self.out_features, device=old.weight.device,
                                dtype=old.weight.dtype)
        self.linear.weight.copy_(old.weight[:, index])
        self.linear.bias.copy_(old.bias)
        for param, old_param in zip(self.linear.parameters(), old.parameters()):
            param.requires_grad_(old_param.requires_grad)
        self.register_buffer('index', index.clone())
        self.deploy = True


def condensing_layers(model: nn.Module) -> list[tuple[str, CondensingConv]]:
    """All LGC/SFR layers of ``model`` with their qualified names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, CondensingConv)]


def condense_model(model: nn.Module, progress: float) -> int:
    """Advance every LGC/SFR layer of ``model`` to the stage due at ``progress``.

    Returns:
        The number of (layer, stage) prunings applied.
    """
    return sum(m.condense(progress) for _, m in condensing_layers(model))


def convert_to_deploy(model: nn.Module) -> nn.Module:
    """Convert ``model`` in place to its deploy form (exact in eval mode).

    Every LGC/SFR layer and condensed linear layer is converted; every other module
    with a ``deploy`` flag is marked deployed, after calling its ``fuse_for_deploy()``
    if it has one (the ShuffleNets fold their conv -> BN pairs there). Checks every
    LGC/SFR layer first, so an unfinished model is left untouched.

    Raises:
        RuntimeError: naming the first layer whose condensation is unfinished.
    """
    layers = condensing_layers(model)
    for name, layer in layers:
        layer.check_condensed(name)
    for name, layer in layers:
        layer.switch_to_deploy(name)
    for name, module in list(model.named_modules()):  # fusing replaces submodules
        if isinstance(module, CondensingLinear):
            module.switch_to_deploy(name)
        elif hasattr(module, 'deploy') and not isinstance(module, CondensingConv):
            if not module.deploy and hasattr(module, 'fuse_for_deploy'):
                module.fuse_for_deploy()
            module.deploy = True
    return model
