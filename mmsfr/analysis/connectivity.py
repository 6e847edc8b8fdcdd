"""How strongly the layers of a CondenseNet / CondenseNetV2 use earlier features.

The CondenseNetV2 paper (sec. 4.1, "Reactivated features", Figs. 6-7) compares
CondenseNet and CondenseNetV2 by the weights their layers learned:

* **Fig. 6**, "weight strength (averaged absolute value of non-pruned weights) between
  a filter group of a certain layer and an input feature map": one column per filter
  group of each layer's learned group convolution (LGC), one row per earlier feature
  map, white where every weight is pruned.
* **Fig. 7**, "the overall connection strength between two layers ... the L1-norm of
  weights between layers": one value per (source layer, target layer).

This module computes these matrices from a state_dict alone (no model is built), for
every checkpoint form mmsfr knows: its own train-time (``_mask`` buffers) and deploy
(``index`` buffers, grouped weights) forms, with or without the ``backbone.`` prefix,
and the authors' released converted and training-script files (mapped to mmsfr keys by
:func:`~mmsfr.converters.convert_official_condensenet`). Both forms
of the same weights give the same matrices: deploy weights are scattered back to the
positions of the train-time ``(out, in)`` matrix they came from.

Notation, per dense block with ``L`` layers (all indices as on the plots):

* Sources ``s = 0 .. L-1``: ``0`` is the block input (the stem for the first block, the
  pooled output of the previous block otherwise: a CondenseNet has no transition
  convolution), ``s >= 1`` the ``k`` new channels of layer ``s``. Targets
  ``l = 1 .. L``: the layers. Layer ``l`` reads every channel of sources ``< l``.
* ``W_l`` (``4k x i_l``): the absolute LGC weights of layer ``l``, zero where pruned
  (``max |w|`` over the kernel for kernels larger than 1x1, the paper's footnote 2;
  CondenseNets use 1x1). Filter ``o`` belongs to group ``o % G``.
* ``F_j`` (``i_j x k``): the absolute SFR weights of layer ``j`` (from its ``k`` new
  channels to the ``i_j`` old channels it may reactivate), zero where pruned.

Matrices (NaN where no connection can exist, i.e. source ``s >= l``):

* ``group_strength[l, g, s]`` (Fig. 6): mean of ``W_l[o, c]`` over the non-pruned
  weights with ``o % G == g`` and ``c`` in source ``s``; NaN when group ``g`` keeps no
  channel of ``s`` (the paper's white dots).
* ``direct[l, s]`` (Fig. 7): the L1 norm of ``W_l`` restricted to source ``s``'s
  channels, divided by its number of entries ``4k * |s|`` (pruned weights count as
  zero): DenseNet's "average absolute filter weight" per (filter, input map). This is
  what the paper plots: for CondenseNetV2 the channels of source ``s`` hold its
  features *plus* the reactivations added to them later, and the later layers' larger
  weights on them are the paper's evidence that reactivation pays.
* ``reactivation[j, s]``: the same average for ``F_j`` restricted to source ``s``'s
  channels (``|s| * k`` entries): how strongly layer ``j`` rewrites the features of
  source ``s``. CondenseNet: None.
* ``effective[l, j]`` (the layer-to-layer strength with SFR included; the paper does
  not define it, this module does): ``direct[l, j] + via_sfr[l, j]`` with

  ``via_sfr[l, j] = sum_c (sum_o W_l[o, c]) * (sum_m F_j[c, m]) / (4k_l * k_j)``

  over the old channels ``c`` that layer ``j`` reactivates (all ``c < i_j``). Layer
  ``j``'s new channel ``m`` reaches layer ``l``'s filter ``o`` directly (one weight,
  counted in ``direct``) and through every old channel ``c`` it is added into (paths
  ``F_j[c, m] * W_l[o, c]``); reactivation is a plain sum and later reactivations
  add to it, so the contribution of ``j`` is still in channel ``c`` when ``l``
  reads it. ``via_sfr`` is the path norm (sum of absolute path products) of that
  linearised route per (target filter, source channel) pair, the same
  normalisation as ``direct``, so the two add. The SFR's BatchNorm and activation
  are left out, as the paper's figures leave out every BatchNorm. The block input
  (``s = 0``) has no SFR, so ``effective[l, 0] = direct[l, 0]``; without SFR
  ``effective == direct``.

:func:`network_connectivity` gives the same matrices over the whole network:
sources are the stem and every layer of every block (channel positions are global in
a fully dense network, so a layer of block 4 may read, and a reactivation rewrite,
channels made in block 1).

Example:
    >>> import torch
    >>> from mmsfr.models import CondenseNetV2
    >>> from mmsfr.models.layers import condense_model
    >>> model = CondenseNetV2(dict(depths=(2, 3), growths=(4, 8), groups=2,
    ...                            condense_factor=2, sparse_factor=2, stem_stride=1))
    >>> _ = condense_model(model, progress=1.0)
    >>> blocks = block_connectivity(model.state_dict())
    >>> [tuple(b.direct.shape) for b in blocks], blocks[1].source_labels
    ([(2, 2), (3, 3)], ('in', '1', '2'))
    >>> tuple(blocks[1].group_strength.shape)  # (target layer, filter group, source)
    (3, 2, 3)
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

__all__ = [
    'Connectivity', 'DenseLayerWeights', 'DenseNetWeights', 'block_connectivity',
    'dense_weights', 'load_dense_state_dict', 'network_connectivity'
]

#: Keys that identify a state_dict in the authors' released format.
_RELEASED = re.compile(r'^(module\.)?features\.(init_conv\.|denseblock_(\d+)\.)')
_LAYER = re.compile(r'^(.*?)blocks\.(\d+)\.(\d+)\.conv_1\.')
_SUPPORTED = (
    "supported: mmsfr CondenseNetV2 / CondenseNet checkpoints in train-time or deploy "
    "form (keys '[backbone.]stem.weight', '[backbone.]blocks.0.0.conv_1.*', "
    "'...conv_2.*', '...sfr.*'), bare or under 'state_dict', and the authors' released "
    "files (keys 'features.init_conv.weight', 'features.denseblock_1.denselayer_1.*')")


@dataclass(frozen=True)
class DenseLayerWeights:
    """Absolute LGC / SFR weights of one dense layer, in the train-time layout.

    Attributes:
        name: Key prefix of the layer, e.g. ``'blocks.2.0'``.
        block: Dense block (0-based).
        layer: Layer in its block (0-based).
        in_channels: Channels the layer reads (``i``).
        growth: New channels it makes (``k``).
        groups: Filter groups G of its LGC (and SFR).
        lgc: ``(bottleneck, in_channels)`` float64: ``|w|`` (max over the kernel) of the
            non-pruned LGC weights, 0 where pruned. Row ``o`` is in group ``o % G``.
        lgc_kept: Bool, same shape: the non-pruned LGC weights.
        sfr: ``(in_channels, growth)`` float64 ``|w|`` of the SFR (old channel x new
            channel), 0 where pruned; None without SFR.
        sfr_kept: Bool, same shape, or None.
    """

    name: str
    block: int
    layer: int
    in_channels: int
    growth: int
    groups: int
    lgc: torch.Tensor
    lgc_kept: torch.Tensor
    sfr: torch.Tensor | None = None
    sfr_kept: torch.Tensor | None = None


@dataclass(frozen=True)
class DenseNetWeights:
    """The connectivity-relevant weights of a whole CondenseNet / CondenseNetV2.

    Attributes:
        family: ``'CondenseNetV2'`` (has SFR) or ``'CondenseNet'``.
        form: ``'train'`` (masks), ``'deploy'`` (index buffers) or ``'mixed'``.
        stem_channels: Channels of the stem (the first block's input).
        depths: Layers per dense block.
        growths: Growth rate per dense block.
        groups: Filter groups G.
        layers: Per block, its layers.
        origin: ``'mmsfr'`` or ``'released'`` (keys of the authors' code, converted).
    """

    family: str
    form: str
    stem_channels: int
    depths: tuple[int, ...]
    growths: tuple[int, ...]
    groups: int
    layers: tuple[tuple[DenseLayerWeights, ...], ...]
    origin: str = 'mmsfr'

    @property
    def block_in_channels(self) -> tuple[int, ...]:
        """Input channels of every dense block."""
        out, c = [], self.stem_channels
        for d, k in zip(self.depths, self.growths):
            out.append(c)
            c += d * k
        return tuple(out)

    def arch_names(self) -> list[str]:
        """Names of the registered archs these weights fit, e.g. ``['condensenetv2-a']``.

        Depths, growths, groups, the stem width and the presence of SFR are compared;
        empty for a custom arch.
        """
        from ..models.backbones.condensenet import CondenseNet, CondenseNetV2
        cls, prefix = ((CondenseNetV2, 'condensenetv2-') if self.family == 'CondenseNetV2'
                       else (CondenseNet, 'condensenet-'))
        names = []
        for name, s in cls.arch_settings.items():
            if ((s['sparse_factor'] is not None) == (self.family == 'CondenseNetV2')
                    and tuple(s['depths']) == self.depths
                    and tuple(s['growths']) == self.growths and s['groups'] == self.groups
                    and 2 * s['growths'][0] == self.stem_channels):
                names.append(prefix + name)
        return names

    def describe(self) -> str:
        """A short description, e.g. ``'CondenseNetV2-A (deploy form)'``."""
        archs = [name.split('-', 1)[1] for name in self.arch_names()]
        if archs:
            head = self.family + '-' + ' / '.join(a.upper() if len(a) == 1 else a
                                                  for a in archs)
        else:
            head = (f'{self.family} (custom: depths {list(self.depths)}, growths '
                    f'{list(self.growths)}, G={self.groups})')
        return f'{head} ({self.form} form)'


@dataclass(frozen=True)
class Connectivity:
    """Connection strengths between the layers of one dense block (or of the network).

    See the module docstring for the exact definitions. Rows of every matrix are the
    target layers (``target_labels``), the last axis the sources (``source_labels``);
    entries for sources a target cannot read are NaN.

    Attributes:
        block: Dense block (0-based), or None for the whole network.
        source_labels: ``'stem'`` / ``'in'`` then layer numbers (``'b.l'`` network-wide).
        target_labels: Layer numbers, 1-based (``'b.l'`` network-wide).
        target_blocks: Dense block of every target.
        groups: Filter groups G.
        group_strength: ``(T, G, S)``: mean ``|w|`` of the non-pruned LGC weights between
            filter group ``g`` of target ``t`` and source ``s``; NaN if none is kept.
        direct: ``(T, S)``: mean ``|w|`` of the LGC weights of target ``t`` on source
            ``s``'s channels, pruned weights counting as 0.
        reactivation: ``(T, S)``: the same for target ``t``'s SFR weights writing into
            source ``s``'s channels; None without SFR.
        effective: ``(T, S)``: ``direct`` plus the path strength through the channels
            source ``s`` (a layer) reactivates; equals ``direct`` without SFR.
    """

    block: int | None
    source_labels: tuple[str, ...]
    target_labels: tuple[str, ...]
    target_blocks: tuple[int, ...]
    groups: int
    group_strength: np.ndarray
    direct: np.ndarray
    reactivation: np.ndarray | None
    effective: np.ndarray

    @property
    def via_sfr(self) -> np.ndarray:
        """``effective - direct``: the part of the strength carried by reactivation."""
        return self.effective - self.direct


# ---------------------------------------------------------------------------- reading
def load_dense_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint file with ``weights_only=True``; return its state_dict.

    mmengine checkpoints (``state_dict``), bare state_dicts, released files (their
    ``state_dict_ema`` preferred, as :func:`mmsfr.apis.read_official_checkpoint` does)
    are accepted; the keys are returned as stored (see :func:`dense_weights`).

    Returns:
        ``(state_dict, source)``, ``source`` naming the checkpoint key used.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a torch checkpoint holding a state_dict.
    """
    from ..apis import read_official_checkpoint
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        return read_official_checkpoint(path)
    except ValueError:
        raise
    except Exception as exc:  # unpickling errors come in many types
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''
        raise ValueError(f'{path}: cannot read it as a torch checkpoint '
                         f'({type(exc).__name__}: {reason})') from exc


def _strip_to_backbone(state_dict: Mapping[str, torch.Tensor],
                       prefix: str | None) -> tuple[dict[str, torch.Tensor], str]:
    """Convert released keys, find the backbone prefix, return bare backbone keys."""
    released = any(_RELEASED.match(k) for k in state_dict)
    if released:
        from ..converters import convert_official_condensenet
        blocks = [int(m[3]) for k in state_dict if (m := _RELEASED.match(k)) and m[3]]
        state_dict = convert_official_condensenet(dict(state_dict),
                                                  num_blocks=max(blocks, default=5))
        prefix = 'backbone.'
    if prefix is None:
        found = {m[1] for k in state_dict if (m := _LAYER.match(k))}
        if not found:
            raise ValueError(_not_dense_message(state_dict))
        found = {p for p in found if p + 'stem.weight' in state_dict} or found
        preferred = [p for p in ('backbone.', '') if p in found]
        if len(found) > 1 and not preferred:
            raise ValueError(f'the checkpoint holds several dense networks (key prefixes '
                             f'{sorted(found)}); choose one with prefix (--prefix)')
        prefix = preferred[0] if preferred else found.pop()
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not any(_LAYER.match(k) for k in out):
        raise ValueError(f"no dense layer under the key prefix {prefix!r} "
                         f"('{prefix}blocks.0.0.conv_1.*' is missing); "
                         + _not_dense_message(state_dict))
    return out, 'released' if released else 'mmsfr'


def _not_dense_message(state_dict: Mapping[str, torch.Tensor]) -> str:
    keys = list(state_dict)
    sample = ', '.join(repr(k) for k in keys[:4]) if keys else 'no keys'
    hint = ''
    if any('.sfr.' in k for k in keys):
        hint = (' It has SFR layers but no dense blocks (an SFR ShuffleNet?): connectivity '
                'plots are defined for dense networks.')
    return (f'not a CondenseNet / CondenseNetV2 checkpoint: found {len(keys)} entries '
            f'such as {sample}.{hint} {_SUPPORTED}')


def _kernel_abs(weight: torch.Tensor) -> torch.Tensor:
    """``|w|`` reduced over the kernel with max (paper footnote 2), float64."""
    w = weight.detach().to(torch.float64).abs()
    return w.amax(dim=(2, 3)) if w.dim() == 4 else w


def _masked_weights(sd: dict, key: str,
                    weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Train-time layer: |masked weight| and the kept (unpruned) positions."""
    mask = sd[f'{key}._mask'].to(torch.float64)
    kept = mask.amax(dim=(2, 3)) > 0 if mask.dim() == 4 else mask > 0
    return _kernel_abs(weight * mask), kept, 'train'


def _deploy_index(sd: dict, key: str) -> torch.Tensor:
    """Deploy layer: its index buffer (raises when the layer has neither form)."""
    if f'{key}.index' not in sd:
        raise ValueError(f'{key}: neither _mask (train-time) nor index (deploy) found')
    return sd[f'{key}.index'].long().flatten()


def _lgc_weights(sd: dict, key: str, in_channels: int,
                 groups: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Dense ``(out, in)`` |w| and kept mask of an LGC, from either form."""
    weight = sd[f'{key}.conv.weight']
    if f'{key}._mask' in sd:
        if weight.shape[1] != in_channels:
            raise ValueError(f'{key}: reads {weight.shape[1]} channels, but the layout '
                             f'(stem and growth rates) gives {in_channels}')
        return _masked_weights(sd, key, weight)
    index = _deploy_index(sd, key)
    n, per_group = index.numel(), weight.shape[1]
    if n % per_group or n // per_group != groups:
        raise ValueError(f'{key}: index of {n} channels and weight {tuple(weight.shape)} '
                         f'do not fit G={groups} groups')
    if int(index.max()) >= in_channels:
        raise ValueError(f'{key}: selects channel {int(index.max())} of only {in_channels}')
    out = weight.shape[0]
    rows = torch.arange(out)
    d_out = out // groups
    # Deploy filter r = g * d_out + q is train-time filter g + q * G (undone by the
    # output shuffle); it reads group g's kept inputs index[g * n/G : (g + 1) * n/G].
    orig_rows = rows // d_out + (rows % d_out) * groups
    cols = index.view(groups, per_group)[rows // d_out]  # (out, n/G)
    dense = torch.zeros(out, in_channels, dtype=torch.float64)
    kept = torch.zeros(out, in_channels, dtype=torch.bool)
    dense[orig_rows[:, None], cols] = _kernel_abs(weight)
    kept[orig_rows[:, None], cols] = True
    return dense, kept, 'deploy'


def _sfr_weights(sd: dict, key: str, in_channels: int,
                 growth: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Dense ``(old, new)`` |w| and kept mask of an SFR, from either form."""
    weight = sd[f'{key}.conv.weight']
    if f'{key}._mask' in sd:
        if tuple(weight.shape[:2]) != (in_channels, growth):
            raise ValueError(f'{key}: weight {tuple(weight.shape)} does not map {growth} new '
                             f'to {in_channels} old channels')
        return _masked_weights(sd, key, weight)
    index = _deploy_index(sd, key)
    per_group = weight.shape[1]
    if growth % per_group or index.numel() != weight.shape[0]:
        raise ValueError(f'{key}: index of {index.numel()} channels and weight '
                         f'{tuple(weight.shape)} do not fit {growth} new channels')
    if int(index.max()) >= in_channels:
        raise ValueError(f'{key}: updates channel {int(index.max())} of only {in_channels}')
    groups = growth // per_group
    n_out = index.numel() // groups
    rows = torch.arange(index.numel())
    # Deploy output r of group g = r // n_out updates old channel index[r] from new
    # channels g, g + G, ... (the input shuffle made them contiguous).
    cols = (rows // n_out)[:, None] + torch.arange(per_group)[None, :] * groups
    dense = torch.zeros(in_channels, growth, dtype=torch.float64)
    kept = torch.zeros(in_channels, growth, dtype=torch.bool)
    dense[index[:, None], cols] = _kernel_abs(weight)
    kept[index[:, None], cols] = True
    return dense, kept, 'deploy'


def dense_weights(state_dict: Mapping[str, torch.Tensor], prefix: str | None = None,
                  stem_channels: int | None = None) -> DenseNetWeights:
    """Parse a CondenseNet / CondenseNetV2 state_dict of any supported form.

    Args:
        state_dict: mmsfr train-time or deploy weights (any key prefix, e.g.
            ``backbone.`` or ``module.backbone.``), or the authors' released converted
            or training-script state_dict.
        prefix: Key prefix of the backbone; found automatically when None.
        stem_channels: Width of the stem, used only when the state_dict has no
            ``stem.weight`` (otherwise it is read from there).

    Returns:
        The parsed weights; depths, growth rates and G are read from the shapes.

    Raises:
        ValueError: naming what was found when the state_dict is not a dense network
            mmsfr knows, or when shapes contradict each other.

    Example:
        >>> from mmsfr.models import CondenseNet
        >>> w = dense_weights(CondenseNet('a').state_dict())
        >>> w.family, w.form, w.depths, w.arch_names()
        ('CondenseNet', 'train', (2, 4, 6, 8, 4), ['condensenet-a'])
    """
    sd, origin = _strip_to_backbone(state_dict, prefix)
    layer_keys: dict[int, dict[int, str]] = {}
    for key in sd:
        m = _LAYER.match(key)
        if m and not m[1]:
            layer_keys.setdefault(int(m[2]), {})[int(m[3])] = f'blocks.{m[2]}.{m[3]}'
    num_blocks = max(layer_keys) + 1
    for b in range(num_blocks):
        present = sorted(layer_keys.get(b, {}))
        if present != list(range(len(present))) or not present:
            raise ValueError(f'dense block {b}: layers {present} are not 0..n-1; the '
                             'state_dict is incomplete')
    if 'stem.weight' in sd:
        stem_channels = int(sd['stem.weight'].shape[0])
    elif stem_channels is None:
        raise ValueError("no 'stem.weight' in the state_dict: cannot infer the first "
                         "block's input width; pass stem_channels (--arch)")
    channels = stem_channels
    blocks, depths, growths, forms, groups_seen, has_sfr = [], [], [], set(), set(), set()
    for b in range(num_blocks):
        layers = []
        for l in range(len(layer_keys[b])):
            name = layer_keys[b][l]
            conv2 = sd.get(f'{name}.conv_2.conv.weight')
            if conv2 is None:
                raise ValueError(f"{name}: '{name}.conv_2.conv.weight' is missing")
            growth = int(conv2.shape[0])
            bottleneck = int(sd[f'{name}.conv_1.conv.weight'].shape[0])
            if bottleneck % conv2.shape[1]:
                raise ValueError(f'{name}: conv_2 weight {tuple(conv2.shape)} does not fit '
                                 f'{bottleneck} LGC outputs')
            groups = bottleneck // int(conv2.shape[1])
            lgc, lgc_kept, form = _lgc_weights(sd, f'{name}.conv_1', channels, groups)
            forms.add(form)
            sfr = sfr_kept = None
            if f'{name}.sfr.conv.weight' in sd:
                sfr, sfr_kept, form = _sfr_weights(sd, f'{name}.sfr', channels, growth)
                forms.add(form)
            has_sfr.add(sfr is not None)
            groups_seen.add(groups)
            layers.append(DenseLayerWeights(name, b, l, channels, growth, groups, lgc,
                                            lgc_kept, sfr, sfr_kept))
            if l and growth != layers[0].growth:
                raise ValueError(f'{name}: growth {growth} differs from the block\'s '
                                 f'{layers[0].growth}')
            channels += growth
        blocks.append(tuple(layers))
        depths.append(len(layers))
        growths.append(layers[0].growth)
    if len(has_sfr) > 1:
        raise ValueError('some dense layers have an SFR and some not: not a CondenseNetV2 '
                         'or CondenseNet')
    return DenseNetWeights(
        family='CondenseNetV2' if has_sfr == {True} else 'CondenseNet',
        form=forms.pop() if len(forms) == 1 else 'mixed', stem_channels=stem_channels,
        depths=tuple(depths), growths=tuple(growths),
        groups=groups_seen.pop() if len(groups_seen) == 1 else max(groups_seen),
        layers=tuple(blocks), origin=origin)


# ---------------------------------------------------------------------------- matrices
def _connectivity(layers: Sequence[DenseLayerWeights],
                  sources: Sequence[tuple[int, int, DenseLayerWeights | None]],
                  source_labels: Sequence[str], target_labels: Sequence[str],
                  block: int | None) -> Connectivity:
    """Matrices for ``layers`` (targets) over ``sources`` = (start, end, producer)."""
    t_n, s_n = len(layers), len(sources)
    g_max = max(layer.groups for layer in layers)
    nan = float('nan')
    group = np.full((t_n, g_max, s_n), nan)
    direct = np.full((t_n, s_n), nan)
    with_sfr = layers[0].sfr is not None
    react = np.full((t_n, s_n), nan) if with_sfr else None
    effective = np.full((t_n, s_n), nan)
    for t, tgt in enumerate(layers):
        g_n = tgt.groups
        col_l1 = tgt.lgc.sum(0)  # L1 of the LGC weights on each input channel
        for s, (lo, hi, producer) in enumerate(sources):
            if hi > tgt.in_channels:
                continue  # produced at or after the target: no connection
            w, kept = tgt.lgc[:, lo:hi], tgt.lgc_kept[:, lo:hi]
            # Filter o is in group o % G: rows g, g + G, ...
            sums = w.reshape(-1, g_n, hi - lo).sum(dim=(0, 2))
            counts = kept.reshape(-1, g_n, hi - lo).sum(dim=(0, 2))
            strength = torch.where(counts > 0, sums / counts.clamp(min=1),
                                   torch.full_like(sums, nan))
            group[t, :g_n, s] = strength.numpy()
            direct[t, s] = w.mean().item()
            effective[t, s] = direct[t, s]
            if with_sfr:
                react[t, s] = tgt.sfr[lo:hi].mean().item()
                if producer is not None:
                    row_l1 = producer.sfr.sum(1)  # L1 of the SFR weights into each old channel
                    paths = (col_l1[:producer.in_channels] * row_l1).sum().item()
                    effective[t, s] += paths / (tgt.lgc.shape[0] * producer.growth)
    return Connectivity(block, tuple(source_labels), tuple(target_labels),
                        tuple(layer.block for layer in layers), g_max, group, direct, react,
                        effective)


def _as_weights(weights: DenseNetWeights | Mapping[str, torch.Tensor]) -> DenseNetWeights:
    return weights if isinstance(weights, DenseNetWeights) else dense_weights(weights)


def block_connectivity(
        weights: DenseNetWeights | Mapping[str, torch.Tensor]) -> list[Connectivity]:
    """Per dense block, the connectivity matrices of the paper's Figs. 6-7.

    Sources are the block input (labelled ``'stem'`` for the first block, ``'in'``
    otherwise) and layers ``1 .. L-1`` of the block; targets layers ``1 .. L``.

    Args:
        weights: A state_dict in any supported form (see :func:`dense_weights`) or its
            parsed :class:`DenseNetWeights`.

    Returns:
        One :class:`Connectivity` per dense block.

    Example:
        >>> from mmsfr.models import CondenseNetV2
        >>> blocks = block_connectivity(CondenseNetV2('a').state_dict())
        >>> [b.direct.shape[0] for b in blocks]  # layers per block
        [1, 1, 4, 6, 8]
    """
    weights = _as_weights(weights)
    out = []
    for b, (layers, c_in) in enumerate(zip(weights.layers, weights.block_in_channels)):
        sources = [(0, c_in, None)] + [
            (layer.in_channels, layer.in_channels + layer.growth, layer)
            for layer in layers[:-1]]
        labels = ['stem' if b == 0 else 'in'] + [str(i + 1) for i in range(len(layers) - 1)]
        out.append(_connectivity(layers, sources, labels,
                                 [str(i + 1) for i in range(len(layers))], b))
    return out


def network_connectivity(
        weights: DenseNetWeights | Mapping[str, torch.Tensor]) -> Connectivity:
    """The connectivity matrices over the whole network.

    Sources are the stem and every dense layer but the last (labelled
    ``'block.layer'``, both 1-based); targets every dense layer. Pooling between
    blocks keeps channel positions, so every layer can read (and reactivate) every
    earlier channel.

    Args:
        weights: A state_dict in any supported form or its :class:`DenseNetWeights`.

    Example:
        >>> from mmsfr.models import CondenseNetV2
        >>> net = network_connectivity(CondenseNetV2('a').state_dict())
        >>> net.direct.shape, net.source_labels[:3], net.target_labels[-1]
        ((20, 20), ('stem', '1.1', '2.1'), '5.8')
    """
    weights = _as_weights(weights)
    layers = [layer for block in weights.layers for layer in block]
    sources = [(0, weights.stem_channels, None)] + [
        (layer.in_channels, layer.in_channels + layer.growth, layer) for layer in layers[:-1]]
    labels = [f'{layer.block + 1}.{layer.layer + 1}' for layer in layers]
    return _connectivity(layers, sources, ['stem'] + labels[:-1], labels, None)
