"""SFR-ShuffleNetV2 and SFR-ShuffleNetV2+ (CondenseNetV2 paper sec. 3.3, supplement
sec. 1.1).

:class:`SFRShuffleNetV2` and :class:`SFRShuffleNetV2Plus` add a sparse feature
reactivation to every stride-1 unit of a :class:`~.shufflenetv2.ShuffleNetV2` /
:class:`~.shufflenetv2.ShuffleNetV2Plus`: a 3x3
:class:`~mmsfr.models.layers.SparseFeatureReactivation` computes an update from the
main branch output and adds it to the pass-through half before the concat. No public
code of these models exists; the structure here is a reconstruction
(docs/sfr_shufflenet.md).

Both take the arguments of their host (only the defaults differ, through class
attributes); the SFR settings are part of the arch (``sfr_factors``, ``sfr_groups``,
``sfr_kernel_size``).
"""
from __future__ import annotations

from typing import Any

from mmengine.registry import MODELS
from torch import nn

from .shufflenetv2 import ShuffleNetV2, ShuffleNetV2Plus, ShuffleUnit

__all__ = ['SFRShuffleNetV2', 'SFRShuffleNetV2Plus']


class _SFRMixin:
    """Sparse feature reactivation in the stride-1 units of a ShuffleNetV2 / V2+.

    Adds to the host's ``arch_settings`` the keys ``sfr_factors`` (S per stage; None:
    half the stage width), ``sfr_groups`` (G per stage or one int; None: G = S) and
    ``sfr_kernel_size`` (3); the host's :meth:`switch_to_deploy` converts the SFRs.
    It hooks into the host's construction (no ``__init__`` of its own): the arch check
    (:meth:`_check_settings`), the arguments of each unit (:meth:`_unit_options`) and
    the initialisation (:meth:`_reference_init`).
    """

    SFR_KEYS: tuple[str, ...] = ('sfr_factors', 'sfr_groups', 'sfr_kernel_size')
    deploy: bool
    arch: dict
    stages: nn.ModuleList

    @classmethod
    def _check_settings(cls, s: dict) -> None:
        super()._check_settings(s)  # type: ignore[misc]
        name, widths = cls.__name__, s['stage_channels']
        halves = tuple(w // 2 for w in widths)
        per_stage = {}
        for key, default in (('sfr_factors', halves), ('sfr_groups', None)):
            value = s[key]
            if value is None:
                value = default
            elif isinstance(value, int):
                value = (value, ) * len(widths)
            else:
                value = tuple(value)
                if len(value) != len(widths):
                    raise ValueError(f'{name}: {key} {value} needs one entry per stage '
                                     f'({len(widths)}, stage_channels {widths})')
            per_stage[key] = value
        factors = per_stage['sfr_factors']
        groups = per_stage['sfr_groups'] or factors  # G = S unless given
        for stage, (half, factor, group) in enumerate(zip(halves, factors, groups)):
            for what, value in (('sfr_factors', factor), ('sfr_groups', group)):
                if not isinstance(value, int) or value < 1 or half % value:
                    raise ValueError(
                        f'{name}: {what}[{stage}]={value!r} must be a positive divisor of '
                        f'{half}, half the width of stage {stage} '
                        f'(stage_channels {widths}); the SFR maps {half} -> {half} '
                        'channels')
        if s['sfr_kernel_size'] not in (1, 3, 5, 7):
            raise ValueError(f"{name}: sfr_kernel_size={s['sfr_kernel_size']!r}; valid "
                             'sizes are (1, 3, 5, 7)')
        s['sfr_factors'], s['sfr_groups'] = factors, groups

    def _unit_options(self, stage: int, index: int) -> dict:
        if index == 0:  # the stride-2 unit is left unchanged (supplement sec. 1.1)
            return {}
        return dict(sfr_factor=self.arch['sfr_factors'][stage],
                    sfr_groups=self.arch['sfr_groups'][stage],
                    sfr_kernel_size=self.arch['sfr_kernel_size'])

    def _reference_init(self) -> None:
        """The host's initialisation, then the SFR norms at zero: reactivation starts
        from zero."""
        super()._reference_init()  # type: ignore[misc]
        self._init_sfr()

    def _init_sfr(self) -> None:
        """Undo the host's BN init on the SFR norms: reactivation starts from zero."""
        for unit in self.sfr_units():
            if not unit.sfr.deploy:
                nn.init.zeros_(unit.sfr.norm.weight)
                nn.init.zeros_(unit.sfr.norm.bias)

    def sfr_units(self) -> list[ShuffleUnit]:
        """The units that carry a sparse feature reactivation.

        Example:
            >>> arch = dict(stage_channels=(48, 96), stage_blocks=(2, 3))
            >>> [u.sfr.in_channels for u in SFRShuffleNetV2(arch=arch).sfr_units()]
            [24, 48, 48]
        """
        return [u for stage in self.stages for u in stage if u.sfr is not None]


@MODELS.register_module()
class SFRShuffleNetV2(_SFRMixin, ShuffleNetV2):
    """SFR-ShuffleNetV2 (CondenseNetV2 paper sec. 3.3, supplement Tables 1-2).

    ShuffleNetV2 whose stride-1 units reactivate the pass-through half: the main branch
    output ``x`` (``c/2`` channels) feeds a 3x3
    :class:`~mmsfr.models.layers.SparseFeatureReactivation` (BN -> ReLU -> masked 3x3
    conv, ``c/2 -> c/2``) whose result is added to the pass-through half before the
    concat; stride-2 units are unchanged. Sparse factor S = c/2 per stage and G = S
    groups (so every input channel finally updates one old channel; the deploy form
    is a depthwise 3x3 conv + ``index_add``). No public code of this model exists:
    the structure is a reconstruction, see docs/sfr_shufflenet.md.

    Output levels as :class:`ShuffleNetV2` (stem 4, stages 8/16/32, ``conv_last`` 32).
    In the ``mmpretrain`` and ``mmdet`` scopes the plain name ``SFRShuffleNetV2``
    finds this class.

    Args:
        arch: ``'0.5x'``, ``'1.0x'`` (default) or ``'1.5x'``, or a dict as for
            :class:`ShuffleNetV2` plus ``sfr_factors``, ``sfr_groups``,
            ``sfr_kernel_size`` (see the legend of :attr:`arch_settings`).
        widen_factor: 0.5, 1.0 or 1.5, an alternative to ``arch``.
        layout: ``'megvii'`` (default) or ``'torchvision'`` unit layout.
        out_indices: Output levels (0: stem, 1-3: stages, 4: ``conv_last``).
        frozen_stages: Freeze the stem (0) and the first ``frozen_stages`` stages.
        norm_cfg: Norm config of the unit convs (the SFR norms are BatchNorm).
        norm_eval: Keep BatchNorm layers in eval mode during training.
        with_cp: Gradient checkpointing of every unit.
        deploy: Build the inference form (SFRs converted, conv -> BN pairs folded), to
            load weights converted by ``tools/convert_to_deploy.py`` (or
            :meth:`switch_to_deploy`).
        init_cfg: mmengine init config.

    Example:
        >>> import torch
        >>> from mmsfr.models import SFRShuffleNetV2, condense_model
        >>> model = SFRShuffleNetV2(arch='0.5x', out_indices=(1, 2, 3)).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 64, 64))]
        [(1, 48, 8, 8), (1, 96, 4, 4), (1, 192, 2, 2)]
        >>> model.arch['sfr_factors'], len(model.sfr_units())
        ((24, 48, 96), 13)
        >>> deployed = SFRShuffleNetV2(arch='0.5x', deploy=True)
        >>> deployed.stages[0][1].sfr.conv
        Conv2d(24, 24, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups=24, bias=False)
    """

    # Legend as in ShuffleNetV2.arch_settings, plus: sfr_factors = sparse factor S of
    # the SFRs of each stage (supplement Table 2: half the stage width; None: c/2);
    # sfr_groups = SFR groups G per stage (None: G = S, as C = S = G in CondenseNetV2);
    # sfr_kernel_size = SFR conv kernel (3, supplement sec. 1.1).
    arch_settings: dict[str, dict] = {
        '0.5x': dict(stage_channels=(48, 96, 192), sfr_factors=(24, 48, 96)),
        '1.0x': dict(stage_channels=(116, 232, 464), sfr_factors=(58, 116, 232)),
        '1.5x': dict(stage_channels=(176, 352, 704), sfr_factors=(88, 176, 352)),
    }
    arch_defaults: dict[str, Any] = dict(ShuffleNetV2.arch_defaults, sfr_factors=None,
                               sfr_groups=None, sfr_kernel_size=3)
    default_arch = '1.0x'


@MODELS.register_module()
class SFRShuffleNetV2Plus(_SFRMixin, ShuffleNetV2Plus):
    """SFR-ShuffleNetV2+ (CondenseNetV2 supplement Tables 3-4).

    megvii's ShuffleNetV2+ with a 3x3 sparse feature reactivation in every stride-1
    unit (3x3 / 5x5 / 7x7 shuffle units and Xception units alike): the main branch
    output (after its SE in stages 3-4) updates the pass-through half before the
    concat, with the stage's activation (ReLU in stage 1, hard-swish after). Sparse
    factor S = c/2 per stage (Small 18-52-104-208, the supplement's 213 read as 208;
    Medium 24-64-128-256) and G = S. A reconstruction: see docs/sfr_shufflenet.md.

    Output levels as :class:`ShuffleNetV2Plus` (stages 4-32, ``conv_last`` 32).

    Args:
        arch: ``'small'`` (default) or ``'medium'``, or a dict as for
            :class:`SFRShuffleNetV2`.
        layout: ``'megvii'`` (default) or ``'torchvision'`` unit layout.
        out_indices: Output levels (0-3: stages, 4: ``conv_last``).
        frozen_stages: Freeze the stem (0) and the first ``frozen_stages`` stages.
        norm_cfg: Norm config of the unit convs (SE and SFR norms are BatchNorm).
        norm_eval: Keep BatchNorm layers in eval mode during training.
        with_cp: Gradient checkpointing of every unit.
        deploy: Build the inference form (SFRs converted, conv -> BN pairs folded).
        init_cfg: mmengine init config.

    Example:
        >>> import torch
        >>> model = SFRShuffleNetV2Plus(arch='small').eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 64, 64))]
        [(1, 36, 16, 16), (1, 104, 8, 8), (1, 208, 4, 4), (1, 416, 2, 2)]
        >>> model.arch['sfr_factors']
        (18, 52, 104, 208)
    """

    # Legend as in SFRShuffleNetV2.arch_settings.
    arch_settings: dict[str, dict] = {
        'small': dict(stage_channels=(36, 104, 208, 416), sfr_factors=(18, 52, 104, 208)),
        'medium': dict(stage_channels=(48, 128, 256, 512), sfr_factors=(24, 64, 128, 256)),
    }
    arch_defaults: dict[str, Any] = dict(ShuffleNetV2Plus.arch_defaults, sfr_factors=None,
                               sfr_groups=None, sfr_kernel_size=3)
    default_arch = 'small'

