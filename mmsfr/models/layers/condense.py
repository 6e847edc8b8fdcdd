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

import contextlib
import math
from typing import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..deploy import Deployable
from .grouped_conv import grouped_pointwise
from .norm_act import DEFAULT_NORM_CFG, build_act, build_norm, norm_act
from .shuffle import channel_shuffle
from ...utils.compat import is_exporting
from ...utils.moved import moved_names

__all__ = ['CondensingConv', 'CondensingLinear', 'LearnedGroupConv',
           'SparseFeatureReactivation', 'condensation_stage', 'condense_model',
           'condensing_layers', 'ChannelScatterAdd', 'index_add_channels_',
           'dense_reactivation_weight', 'scatter_rounds', 'static_scatter_indices']


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


class CondensingConv(Deployable, nn.Module):
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

    def check_deployable(self, name: str = '') -> None:
        self.check_condensed(name)

    @torch.no_grad()
    def convert_own_parts(self, name: str = '') -> None:
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


#: A deploy 1x1 SFR with at most this many new channels exports as one dense matrix
#: product (:func:`dense_reactivation_weight`), above it as ``ScatterND`` rounds
#: (:func:`scatter_add_rounds`); see :func:`static_scatter_indices`.
DENSE_EXPORT_MAX_GROWTH = 64


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
        #: The index as Python ints while :func:`static_scatter_indices` is on (export).
        self.export_rounds: list[tuple[list[int] | None, list[int]]] | None = None
        #: The dense update weight while :func:`static_scatter_indices` is on (export).
        self.export_weight: torch.Tensor | None = None
        if not self.deploy:
            # Start as identity: the reactivation grows from zero (reference init).
            nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            if is_exporting() and self.export_weight is not None:
                return old + dense_pointwise(norm_act(self.norm, self.act, x),
                                             self.export_weight)
            if is_exporting() and self.export_rounds is not None:
                return scatter_add_rounds(old, self.update(x), self.export_rounds)
            if is_exporting():
                # The same sum, as old + scatter-add into zeros: onnxscript's optimizer
                # (0.7) takes a ScatterND(add) whose indices cover the whole axis in
                # order (a freshly built deploy SFR) for a copy of its updates, which is
                # right only when the scattered-into tensor is zero.
                return old + torch.zeros_like(old).index_add(1, self.index, self.update(x))
            if torch.onnx.is_in_onnx_export():  # the TorchScript-based exporter
                return ChannelScatterAdd.apply(old, self.index, self.update(x))
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


class ChannelScatterAdd(torch.autograd.Function):
    """``old.index_add(1, index, values)``, exported exactly by torch's TorchScript-based
    ONNX exporter (``torch.onnx.export(..., dynamo=False)``, the route of MMDeploy and
    most deployment scripts).

    That exporter turns ``index_add`` into a ``ScatterElements`` without a reduction,
    which overwrites where indices repeat (SFR indices do: two groups may reactivate
    the same old channel), silently giving a wrong graph. This function's ONNX symbolic
    emits ``ScatterElements(reduction='add')`` (opset >= 16), which sums them.

    Example:
        >>> old, values = torch.zeros(1, 3, 1, 1), torch.ones(1, 2, 1, 1)
        >>> ChannelScatterAdd.apply(old, torch.tensor([2, 2]), values).flatten().tolist()
        [0.0, 0.0, 2.0]
    """

    @staticmethod
    def forward(ctx, old: torch.Tensor, index: torch.Tensor,
                values: torch.Tensor) -> torch.Tensor:
        return old.index_add(1, index, values)

    @staticmethod
    def symbolic(g, old, index, values):
        opset = g.opset  # the exporter's graph context knows its target opset
        if opset < 16:
            raise ValueError(
                f'the sparse feature reactivation exports as ScatterElements with '
                f"reduction='add', which needs ONNX opset >= 16; got opset_version={opset}")
        shape = g.op('Constant', value_t=torch.tensor([1, -1, 1, 1], dtype=torch.int64))
        indices = g.op('Expand', g.op('Reshape', index, shape), g.op('Shape', values))
        return g.op('ScatterElements', old, indices, values, axis_i=1, reduction_s='add')


def dense_reactivation_weight(weight: torch.Tensor, index: torch.Tensor, groups: int,
                              old_channels: int) -> torch.Tensor:
    """A deploy 1x1 SFR's grouped weight as one dense ``(old_channels, k)`` matrix.

    Entry ``[index[o], g + G * i]`` is ``weight[o, i]`` for output ``o`` of group ``g``
    (group ``g`` reads inputs ``g, g + G, ...``), zero elsewhere; entries that meet add.
    So per pixel ``old + W @ x`` is ``old.index_add(1, index, grouped_conv(x))``.

    Example:
        >>> w = torch.tensor([[1.], [2.], [3.], [4.]])  # 4 outputs, 2 groups, 1 input each
        >>> dense_reactivation_weight(w, torch.tensor([0, 2, 2, 1]), 2, 3)
        tensor([[1., 0.],
                [0., 4.],
                [2., 3.]])
    """
    n, per_group = weight.shape[:2]
    group = torch.arange(n, device=weight.device) // (n // groups)
    cols = group[:, None] + groups * torch.arange(per_group, device=weight.device)
    rows = index[:, None].expand(n, per_group)
    dense = weight.new_zeros(old_channels, groups * per_group)
    return dense.index_put((rows, cols), weight.reshape(n, per_group), accumulate=True)


def dense_pointwise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A bias-free 1x1 convolution as ``weight @ x`` over ``(N, C, H * W)`` (one
    ``MatMul`` in ONNX, no layout change around it)."""
    n, _, h, w = x.shape
    return torch.matmul(weight, x.reshape(n, -1, h * w)).reshape(n, -1, h, w)


def scatter_rounds(index: torch.Tensor) -> list[tuple[list[int] | None, list[int]]]:
    """``index_add``'s rows along the channel axis, split into rounds whose targets are
    distinct: round ``r`` adds the ``r``-th occurrence of every repeated target.

    Returns:
        ``[(positions, targets), ...]``: the rows (positions in ``index``) of each
        round and the channels they add into; ``positions`` is None when the round is
        every row in order. The rows of a round are in descending target order when
        they would otherwise add into every channel in order (onnxscript's optimizer,
        0.7, takes such a scatter-add for a copy of its updates).

    Example:
        >>> scatter_rounds(torch.tensor([2, 0, 2, 1]))
        [([0, 1, 3], [2, 0, 1]), ([2], [2])]
        >>> scatter_rounds(torch.tensor([1, 0]))
        [(None, [1, 0])]
    """
    targets = index.tolist()
    seen: dict[int, int] = {}
    rounds: list[list[int]] = []
    for pos, target in enumerate(targets):
        r = seen.get(target, 0)
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(pos)
        seen[target] = r + 1
    out = []
    for positions in rounds:
        chosen = [targets[p] for p in positions]
        if chosen == list(range(len(chosen))) and len(chosen) > 1:
            positions = positions[::-1]
            chosen = chosen[::-1]
        out.append((None if positions == list(range(len(targets))) else positions, chosen))
    return out


def scatter_add_rounds(old: torch.Tensor, values: torch.Tensor,
                       rounds: list[tuple[list[int] | None, list[int]]]) -> torch.Tensor:
    """``old.index_add(1, index, values)`` as :func:`scatter_rounds` splits it, in the
    ops an ONNX graph runs fastest: per round, one ``ScatterND(reduction='add')`` into
    ``old`` viewed as ``(N * C, H * W)`` rows (no transposes, no zero tensor), with
    distinct indices (onnxruntime applies a node's rows in parallel).

    Example:
        >>> old, values = torch.zeros(2, 3, 1, 2), torch.ones(2, 4, 1, 2)
        >>> index = torch.tensor([2, 0, 2, 1])
        >>> y = scatter_add_rounds(old, values, scatter_rounds(index))
        >>> torch.equal(y, old.index_add(1, index, values))
        True
    """
    n, c, h, w = old.shape
    k = values.shape[1]
    rows = old.reshape(n * c, h * w)
    updates = values.reshape(n * k, h * w)
    image = torch.arange(n, device=old.device).unsqueeze(1)
    for positions, targets in rounds:
        part = updates
        if positions is not None:  # this round's rows of every image
            chosen = image * k + torch.tensor(positions, device=old.device)
            part = updates.index_select(0, chosen.reshape(-1))
        target = image * c + torch.tensor(targets, device=old.device)
        rows = rows.index_put((target.reshape(-1), ), part, accumulate=True)
    return rows.reshape(n, c, h, w)


@contextlib.contextmanager
def static_scatter_indices(model: nn.Module,
                           dense_max_growth: int = DENSE_EXPORT_MAX_GROWTH) -> Iterator[None]:
    """Within the context, every deploy :class:`SparseFeatureReactivation` of ``model``
    exports its scatter-add in the form that onnxruntime runs fastest, with the index
    read now: ``torch.export`` traces buffers without their values.

    * A 1x1 SFR with at most ``dense_max_growth`` new channels: ``old + W @ x`` with
      the dense weight of :func:`dense_reactivation_weight` (one ``MatMul`` and one
      ``Add``, no ``ScatterND``), computed now from the current weights and dropped
      on exit.
    * Any other: ``ScatterND`` rounds with distinct targets (:func:`scatter_add_rounds`).

    The dense product does ``S`` times the multiply-adds of the sparse one (with
    ``S`` the sparse factor), but costs onnxruntime less than the rounds, each of which
    copies the whole old-feature tensor, while ``k`` is small. ``bench/onnx_latency.py``
    times CondenseNetV2-C exported both ways; the threshold 64 was chosen by timing
    CondenseNetV2-A / B / C in onnxruntime 1.32 with thresholds from 0 to 128.

    Args:
        model: Network whose deploy SFRs are switched (train-time ones are left alone).
        dense_max_growth: Largest ``k`` exported densely; 0 for rounds everywhere.

    Example:
        >>> sfr = SparseFeatureReactivation(8, 24, groups=4, factor=4, deploy=True)
        >>> with static_scatter_indices(sfr):
        ...     tuple(sfr.export_weight.shape), sfr.export_rounds
        ((24, 8), None)
        >>> with static_scatter_indices(sfr, dense_max_growth=0):
        ...     len(sfr.export_rounds)
        1
        >>> sfr.export_rounds is None and sfr.export_weight is None
        True
    """
    if isinstance(dense_max_growth, bool) or not isinstance(dense_max_growth, int) \
            or dense_max_growth < 0:
        raise ValueError(f'dense_max_growth must be an int >= 0 (0: no dense SFR export), '
                         f'got {dense_max_growth!r}')
    layers = [m for m in model.modules()
              if isinstance(m, SparseFeatureReactivation) and m.deploy]
    for layer in layers:
        if layer.kernel_size == 1 and layer.in_channels <= dense_max_growth:
            with torch.no_grad():
                layer.export_weight = dense_reactivation_weight(
                    layer.conv.weight, layer.index, layer.groups, layer.out_channels)
        else:
            layer.export_rounds = scatter_rounds(layer.index)
    try:
        yield
    finally:
        for layer in layers:
            layer.export_rounds = layer.export_weight = None


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


class CondensingLinear(Deployable, nn.Module):
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
    def convert_own_parts(self, name: str = '') -> None:
        """Keep the ``keep_ratio`` strongest inputs (a pruning, see above)."""
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


#: Names that moved out of this module (importable here still, with a warning).
__getattr__ = moved_names(__name__, {
    'build_act': 'mmsfr.models.layers.norm_act',
    'DEFAULT_NORM_CFG': 'mmsfr.models.layers.norm_act',
    'build_norm': 'mmsfr.models.layers.norm_act',
    'is_plain_batchnorm': 'mmsfr.models.layers.norm_act',
    'INPLACE_MIN_NUMEL': 'mmsfr.models.layers.norm_act',
    'inplace_activation': 'mmsfr.models.layers.norm_act',
    'activate_': 'mmsfr.models.layers.norm_act',
    'EvalNorm': 'mmsfr.models.layers.norm_act',
    'eval_norm': 'mmsfr.models.layers.norm_act',
    'eval_norm_act_': 'mmsfr.models.layers.norm_act',
    'affine_act_': 'mmsfr.models.layers.norm_act',
    'norm_act': 'mmsfr.models.layers.norm_act',
    'bn_affine': 'mmsfr.models.layers.norm_act',
    'eval_affine': 'mmsfr.models.layers.norm_act',
    'PreActConv': 'mmsfr.models.layers.norm_act',
    'convert_to_deploy': 'mmsfr.models.deploy',
})
