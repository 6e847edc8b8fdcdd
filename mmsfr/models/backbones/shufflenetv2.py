"""ShuffleNetV2 (Ma et al., ECCV 2018) and megvii's ShuffleNetV2+.

A ShuffleNetV2 unit splits its input channels in two: one half passes through, the
other goes through ``1x1 conv -> depthwise kxk -> 1x1 conv`` (the *main* branch); a
stride-2 unit instead feeds the whole input to the main branch and to a second,
*projection* branch (``depthwise kxk -> 1x1 conv``) and concatenates both.

Two incompatible weight layouts exist, selected by ``layout``:

* ``'megvii'`` (the paper authors' code and released weights): a stride-1 unit passes
  the even channels through and processes the odd ones, returns ``[pass, processed]``
  and does not shuffle; a stride-2 unit's projection branch keeps the ``in`` input
  channels and its main branch outputs ``out - in`` (e.g. 24 + 92 in 1.0x stage 1).
  The released weights expect BGR input in 0-255 without mean/std normalisation.
* ``'torchvision'`` (torchvision, mmpretrain): a stride-1 unit splits into contiguous
  halves; both branches of a stride-2 unit output ``out / 2``; every unit ends with
  ``channel_shuffle(x, 2)``. Weights expect ImageNet RGB mean/std normalisation.

ShuffleNetV2+ (megvii ShuffleNet-Series) reuses the megvii unit with per-position
kernel sizes (3/5/7), an Xception unit (three ``depthwise 3x3 -> 1x1`` pairs), hard-swish
from the second stage and squeeze-excitation in the last two stages.

SFR-ShuffleNetV2 / SFR-ShuffleNetV2+ (CondenseNetV2 paper sec. 3.3 and supplement
sec. 1.1; :class:`SFRShuffleNetV2`, :class:`SFRShuffleNetV2Plus`) add a sparse feature
reactivation to every stride-1 unit: a 3x3
:class:`~mmsfr.models.layers.SparseFeatureReactivation` computes an update from the
main branch output and adds it to the pass-through half before the concat. No public
code of these models exists; the structure here is a reconstruction
(docs/sfr_shufflenet.md).

The module also holds the converters of the released checkpoints
(:func:`convert_official_shufflenetv2`, :func:`convert_official_shufflenetv2plus`,
:func:`convert_torchvision_shufflenetv2`).
"""
from __future__ import annotations

import copy
import re
from typing import Sequence

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...checkpoint import strip_module_prefix
from .base import FreezableBackbone, resolve_out_indices
from ..deploy import Deployable
from ..layers import (FastMaxPool2d, SparseFeatureReactivation, SqueezeExcitation,
                      channel_shuffle, fuse_conv_module, inference_fast_path)
from ..layers.fuse import fold_state_dict_norms

__all__ = [
    'ShuffleUnit', 'ShuffleNetV2', 'ShuffleNetV2Plus', 'SFRShuffleNetV2',
    'SFRShuffleNetV2Plus', 'convert_official_shufflenetv2',
    'convert_official_shufflenetv2plus', 'convert_torchvision_shufflenetv2'
]

LAYOUTS = ('megvii', 'torchvision')
# ShuffleNetV2+ unit choices: 0/1/2 = shuffle unit with a 3x3/5x5/7x7 depthwise conv,
# 3 = Xception unit (three depthwise 3x3 + pointwise pairs).
UNIT_KERNELS = {0: 3, 1: 5, 2: 7, 3: 3}
XCEPTION = 3
SHUFFLENETV2PLUS_UNITS = (0, 0, 3, 1, 1, 1, 0, 0, 2, 0, 2, 1, 1, 0, 2, 0, 2, 1, 3, 2)


class ShuffleUnit(Deployable, nn.Module):
    """One ShuffleNetV2 / V2+ unit (shuffle or Xception flavour), either layout.

    Args:
        in_channels: Input channels of the unit (equal to ``out_channels`` when
            ``stride`` is 1).
        out_channels: Output channels; must be even (the unit works on halves).
        stride: 1 (split, process one half) or 2 (two branches, downsample).
        kernel_size: Depthwise kernel of a shuffle unit (3, 5 or 7); the Xception unit
            always uses 3.
        xception: Build the Xception main branch (ShuffleNetV2+ choice 3).
        layout: ``'megvii'`` or ``'torchvision'`` (see the module docstring).
        act_cfg: Activation after the pointwise convs.
        with_se: Squeeze-excite the main branch output (ShuffleNetV2+ SE: reduction 4,
            BN after the squeeze, hard-sigmoid gate).
        norm_cfg: Norm of every conv.
        with_cp: Recompute the unit in backward to save memory.
        sfr_factor: Sparse factor S of a sparse feature reactivation (SFR) from the
            main branch output into the pass-through half (stride-1 units only);
            ``None`` (default) builds a plain unit. S must divide ``out_channels / 2``.
        sfr_groups: Input groups G of the SFR (must divide ``out_channels / 2``);
            ``None`` means G = S.
        sfr_kernel_size: Kernel of the SFR conv (3 in the SFR ShuffleNets).
        deploy: Build the deploy form: every conv -> BN pair folded into one conv with
            a bias (:meth:`convert_own_parts`) and the SFR converted (grouped conv +
            ``index_add``). Equal to the eval-mode train-time unit.

    Example:
        >>> unit = ShuffleUnit(24, 116, stride=2)
        >>> unit(torch.rand(1, 24, 8, 8)).shape
        torch.Size([1, 116, 4, 4])
        >>> sfr_unit = ShuffleUnit(116, 116, sfr_factor=58)
        >>> sfr_unit.sfr.in_channels, sfr_unit.sfr.groups, sfr_unit.sfr.factor
        (58, 58, 58)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 kernel_size: int = 3, xception: bool = False, layout: str = 'megvii',
                 act_cfg: dict = dict(type='ReLU'), with_se: bool = False,
                 norm_cfg: dict = dict(type='BN'), with_cp: bool = False,
                 sfr_factor: int | None = None, sfr_groups: int | None = None,
                 sfr_kernel_size: int = 3, deploy: bool = False) -> None:
        super().__init__()
        name = type(self).__name__
        if stride not in (1, 2):
            raise ValueError(f'{name}: stride={stride}; valid strides are (1, 2)')
        if layout not in LAYOUTS:
            raise ValueError(f'{name}: layout={layout!r}; choose one of {LAYOUTS}')
        if kernel_size not in (3, 5, 7):
            raise ValueError(f'{name}: kernel_size={kernel_size}; valid sizes are (3, 5, 7)')
        if out_channels % 2:
            raise ValueError(f'{name}: out_channels={out_channels} is odd; the unit splits '
                             'its channels into two equal halves, so it needs an even count')
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f'{name}: a stride-1 unit needs in_channels == out_channels, '
                             f'got {in_channels} and {out_channels}')
        if sfr_factor is not None and stride != 1:
            raise ValueError(f'{name}: sfr_factor={sfr_factor} given to a stride-{stride} '
                             'unit; feature reactivation exists only in stride-1 units')
        half = out_channels // 2
        if stride == 1:
            main_in, proj_channels = half, half  # the pass-through half
        else:
            main_in = in_channels
            proj_channels = in_channels if layout == 'megvii' else half
            if proj_channels >= out_channels:
                raise ValueError(
                    f'{name}: with layout={layout!r} the projection branch keeps the '
                    f'{in_channels} input channels, so out_channels={out_channels} must be '
                    'larger than in_channels')
        main_out = out_channels - proj_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.layout = layout
        self.with_cp = with_cp
        self.deploy = False

        def conv(cin: int, cout: int, k: int = 1, s: int = 1, act: bool = True,
                 dw: bool = False) -> ConvModule:
            return ConvModule(cin, cout, k, s, k // 2, groups=cin if dw else 1,
                              norm_cfg=norm_cfg, act_cfg=act_cfg if act else None)

        if xception:
            main = [conv(main_in, main_in, 3, stride, act=False, dw=True),
                    conv(main_in, half),
                    conv(half, half, 3, act=False, dw=True),
                    conv(half, half),
                    conv(half, half, 3, act=False, dw=True),
                    conv(half, main_out)]
            proj_kernel = 3
        else:
            main = [conv(main_in, half),
                    conv(half, half, kernel_size, stride, act=False, dw=True),
                    conv(half, main_out)]
            proj_kernel = kernel_size
        if with_se:
            main.append(SqueezeExcitation(main_out, reduction=4, gate='hsigmoid',
                                          with_norm=True))
        self.branch_main = nn.Sequential(*main)
        self.branch_proj = None
        if stride == 2:
            self.branch_proj = nn.Sequential(
                conv(in_channels, in_channels, proj_kernel, stride, act=False, dw=True),
                conv(in_channels, proj_channels))
        # Sparse feature reactivation: processed half -> update of the pass-through half.
        self.sfr = None
        if sfr_factor is not None:
            self.sfr = SparseFeatureReactivation(
                half, half, sfr_kernel_size, groups=sfr_factor if sfr_groups is None else
                sfr_groups, factor=sfr_factor, act_cfg=act_cfg, deploy=deploy)
        if deploy:
            self.convert_own_parts()

    def convert_own_parts(self, name: str = '') -> None:
        """Fold the BatchNorm of every conv of both branches into the conv (exact in
        eval mode; convs with another norm are kept) and mark the unit deployed.

        The SFR is converted separately (it must be fully condensed first):
        :func:`~mmsfr.models.layers.convert_to_deploy` does both.
        """
        for branch in (self.branch_main, self.branch_proj):
            if branch is None:
                continue
            for i, module in enumerate(branch):
                if isinstance(module, ConvModule):
                    branch[i] = fuse_conv_module(module)
        self.deploy = True

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            if self.layout == 'megvii':
                keep, x = x[:, 0::2], x[:, 1::2]
            else:
                half = x.shape[1] // 2
                keep, x = x[:, :half], x[:, half:]
            x = self.branch_main(x)
            if self.sfr is None:
                out = torch.cat((keep, x), 1)
            elif inference_fast_path():  # reactivate in place, inside the output
                out = torch.cat((keep, x), 1)
                self.sfr.reactivate_(x, out[:, :keep.shape[1]])
            else:
                out = torch.cat((self.sfr(x, keep), x), 1)  # keep + update from new half
        else:
            out = torch.cat((self.branch_proj(x), self.branch_main(x)), 1)
        if self.layout == 'torchvision':
            out = channel_shuffle(out, 2)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


@MODELS.register_module()
class ShuffleNetV2(FreezableBackbone):
    """ShuffleNetV2 backbone, in megvii's (default) or torchvision's weight layout.

    Output levels (``out_indices`` picks among them):

    =====  ==================================  ======  ========================
    index  module                              stride  channels (1.0x)
    =====  ==================================  ======  ========================
    0      stem (conv 3x3 s2 + BN+ReLU, pool)  4       24
    1-3    stages of 4 / 8 / 4 units           8-32    116 / 232 / 464
    4      ``conv_last`` (1x1 + BN + ReLU)     32      1024 (2048 for 2.0x)
    =====  ==================================  ======  ========================

    ``conv_last`` is the pretrained end of the classifier; it is built only when index
    4 is requested, so detectors that stop at the stages carry no unused parameters.
    Classification configs use ``out_indices=(4,)`` with a ``GlobalAveragePooling`` neck
    and :class:`~mmsfr.models.heads.ShuffleNetV2ClsHead`.

    In the ``mmpretrain`` scope the name ``ShuffleNetV2`` resolves to mmpretrain's own
    backbone; write ``type='mmsfr.models.ShuffleNetV2'`` there (the ``mmdet`` scope finds
    this class under its plain name).

    Args:
        arch: ``'0.5x'``, ``'1.0x'``, ``'1.5x'``, ``'2.0x'`` or a dict with
            ``stage_channels`` (and optionally ``stage_blocks``, ``stem_channels``,
            ``last_channels``). Default ``'1.0x'``.
        widen_factor: 0.5, 1.0, 1.5 or 2.0, an alternative to ``arch``.
        layout: ``'megvii'`` (the authors' released weights) or ``'torchvision'``.
        out_indices: Output levels (see the table), returned in this order, each at
            most once. Default: 0-3 (strides 4-32).
        frozen_stages: Freeze the stem (0) and the first ``frozen_stages`` stages as
            in mmdet; -1 freezes nothing.
        norm_cfg: Norm config of every conv.
        norm_eval: Keep BatchNorm layers in eval mode during training.
        with_cp: Gradient checkpointing of every unit.
        deploy: Build the inference form, every conv -> BN pair folded into one conv
            (see :meth:`switch_to_deploy`). Train-time weights, e.g. the released
            ones, are folded as they load.
        init_cfg: mmengine init config, e.g.
            ``dict(type='Pretrained', checkpoint='...', prefix='backbone.')``.

    Attributes:
        out_channels (tuple[int]): Channels of each output, in ``out_indices`` order.
        out_strides (tuple[int]): Strides of each output.
        feature_info (list[dict]): ``num_chs``, ``reduction`` and ``module`` per output.

    Example:
        >>> import torch
        >>> from mmsfr.models import ShuffleNetV2
        >>> model = ShuffleNetV2(arch='1.0x', out_indices=(0, 1, 2, 3, 4)).eval()
        >>> for out in model(torch.rand(1, 3, 224, 224)):
        ...     print(tuple(out.shape))
        (1, 24, 56, 56)
        (1, 116, 28, 28)
        (1, 232, 14, 14)
        (1, 464, 7, 7)
        (1, 1024, 7, 7)
        >>> model.out_strides
        (4, 8, 16, 32, 32)
    """

    # Legend: stage_channels = output width of each stage; stage_blocks = units per
    # stage (the first has stride 2); stem_channels = width of the 3x3 stem conv;
    # last_channels = width of conv_last; maxpool = max-pool after the stem (that
    # output is level 0); stem_act = activation of the stem and conv_last; unit_choices
    # = per-unit type (0/1/2: 3x3/5x5/7x7 shuffle unit, 3: Xception; None: all 0);
    # stage_acts / stage_se = activation and SE of the units of each stage.
    arch_settings: dict[str, dict] = {
        '0.5x': dict(stage_channels=(48, 96, 192), last_channels=1024),
        '1.0x': dict(stage_channels=(116, 232, 464), last_channels=1024),
        '1.5x': dict(stage_channels=(176, 352, 704), last_channels=1024),
        '2.0x': dict(stage_channels=(244, 488, 976), last_channels=2048),
    }
    arch_defaults: dict = dict(stage_blocks=(4, 8, 4), stem_channels=24, last_channels=1024,
                               maxpool=True, stem_act='ReLU', unit_choices=None,
                               stage_acts=None, stage_se=None)
    default_arch = '1.0x'

    def __init__(self, arch: str | dict | None = None, widen_factor: float | None = None,
                 layout: str = 'megvii', out_indices: Sequence[int] | None = None,
                 frozen_stages: int = -1, norm_cfg: dict = dict(type='BN'),
                 norm_eval: bool = False, with_cp: bool = False, deploy: bool = False,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        cls_name = type(self).__name__
        self.deploy = deploy
        if widen_factor is not None:
            by_width = self._arch_from_widen_factor(widen_factor)
            if arch is not None and (not isinstance(arch, str) or arch.lower() != by_width):
                raise ValueError(f'{cls_name}: arch={arch!r} contradicts widen_factor='
                                 f'{widen_factor}; give only one of them')
            arch = by_width
        self.arch_name, settings = self.resolve_arch(self.default_arch if arch is None
                                                     else arch)
        self.arch = settings
        if layout not in LAYOUTS:
            raise ValueError(f'{cls_name}: layout={layout!r}; choose one of {LAYOUTS}')
        num_stages = len(settings['stage_channels'])
        offset = 1 if settings['maxpool'] else 0  # level index of stage 0
        num_levels = offset + num_stages + 1
        out_indices = resolve_out_indices(cls_name, out_indices, num_levels,
                                          range(num_levels - 1), 'conv_last')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'{cls_name}: frozen_stages={frozen_stages} out of range; '
                             f'valid values are -1..{num_stages}')
        self.layout = layout
        self.norm_cfg = norm_cfg
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self._stage_offset = offset
        self._last_index = num_levels - 1

        stem_act = dict(type=settings['stem_act'])
        stem_channels = settings['stem_channels']
        self.stem = ConvModule(3, stem_channels, 3, 2, 1, norm_cfg=norm_cfg, act_cfg=stem_act)
        self.maxpool = FastMaxPool2d(3, 2, 1) if settings['maxpool'] else None
        choices = settings['unit_choices']
        self.stages = nn.ModuleList()
        channels, position = stem_channels, 0
        for s, (width, blocks) in enumerate(zip(settings['stage_channels'],
                                                settings['stage_blocks'])):
            act = dict(type=settings['stage_acts'][s] if settings['stage_acts'] else 'ReLU')
            se = bool(settings['stage_se'][s]) if settings['stage_se'] else False
            units = []
            for i in range(blocks):
                choice = choices[position] if choices else 0
                units.append(ShuffleUnit(
                    channels, width, stride=2 if i == 0 else 1,
                    kernel_size=UNIT_KERNELS[choice], xception=choice == XCEPTION,
                    layout=layout, act_cfg=act, with_se=se, norm_cfg=norm_cfg,
                    with_cp=with_cp, deploy=deploy, **self._unit_options(s, i)))
                channels, position = width, position + 1
            self.stages.append(nn.Sequential(*units))
        self.conv_last = None
        if self._last_index in out_indices:
            self.conv_last = ConvModule(channels, settings['last_channels'], 1,
                                        norm_cfg=norm_cfg, act_cfg=stem_act)

        level_channels = ([stem_channels] if offset else []) + list(
            settings['stage_channels']) + [settings['last_channels']]
        level_strides = [2**(s + 2) for s in range(offset + num_stages)] + [
            2**(offset + num_stages + 1)]
        level_modules = (['maxpool'] if offset else []) + [
            f'stages.{s}' for s in range(num_stages)] + ['conv_last']
        self.out_channels = tuple(level_channels[i] for i in out_indices)
        self.out_strides = tuple(level_strides[i] for i in out_indices)
        self.feature_info = [
            dict(num_chs=level_channels[i], reduction=level_strides[i],
                 module=level_modules[i]) for i in out_indices
        ]
        self._reference_init()
        if deploy:
            self.convert_own_parts()
        self._freeze_stages()

    # ------------------------------------------------------------------ arch
    @classmethod
    def _arch_from_widen_factor(cls, widen_factor: float) -> str:
        valid = [float(k[:-1]) for k in cls.arch_settings]
        try:
            name = f'{float(widen_factor):.1f}x'
        except (TypeError, ValueError):
            name = None
        if name not in cls.arch_settings:
            raise ValueError(f'{cls.__name__}: unknown widen_factor {widen_factor!r}; valid '
                             f'factors are {valid}')
        return name

    @classmethod
    def resolve_arch(cls, arch: str | dict) -> tuple[str, dict]:
        """Return ``(name, settings)`` for an arch key or dict; raise on bad input.

        Example:
            >>> ShuffleNetV2.resolve_arch('0.5x')[1]['stage_channels']
            (48, 96, 192)
        """
        settings = copy.deepcopy(cls.arch_defaults)
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_settings:
                raise ValueError(f'{cls.__name__}: unknown arch {arch!r}; valid archs are '
                                 f'{list(cls.arch_settings)} or a dict with keys '
                                 f'{["stage_channels", *cls.arch_defaults]}')
            settings.update(copy.deepcopy(cls.arch_settings[key]))
            name = key
        elif isinstance(arch, dict):
            unknown = set(arch) - set(cls.arch_defaults) - {'stage_channels'}
            if 'stage_channels' not in arch or unknown:
                raise ValueError(f'{cls.__name__}: a custom arch needs the key '
                                 f"'stage_channels' and accepts "
                                 f'{list(cls.arch_defaults)}; got keys {sorted(arch)}')
            settings.update(copy.deepcopy(arch))
            name = 'custom'
        else:
            raise TypeError(f'{cls.__name__}: arch must be a str or dict, got {type(arch)}')
        cls._check_settings(settings)
        return name, settings

    @classmethod
    def _check_settings(cls, s: dict) -> None:
        name = cls.__name__
        widths, blocks = tuple(s['stage_channels']), tuple(s['stage_blocks'])
        s['stage_channels'], s['stage_blocks'] = widths, blocks
        if len(widths) != len(blocks) or any(b < 1 for b in blocks):
            raise ValueError(f'{name}: stage_channels {widths} and stage_blocks {blocks} '
                             'must have equal lengths and at least one unit per stage')
        for w in widths:
            if w <= 0 or w % 2:
                raise ValueError(f'{name}: stage width {w} in stage_channels {widths} is not '
                                 'a positive even number; ShuffleNetV2 units split their '
                                 'channels into two equal halves')
        for key in ('stage_acts', 'stage_se'):
            if s[key] is not None and len(s[key]) != len(widths):
                raise ValueError(f'{name}: {key} {s[key]} needs one entry per stage '
                                 f'({len(widths)})')
        if s['unit_choices'] is not None:
            choices = tuple(s['unit_choices'])
            s['unit_choices'] = choices
            if len(choices) != sum(blocks):
                raise ValueError(f'{name}: unit_choices has {len(choices)} entries but the '
                                 f'stages hold {sum(blocks)} units')
            bad = [c for c in choices if c not in UNIT_KERNELS]
            if bad:
                raise ValueError(f'{name}: unit choice {bad[0]} in {choices} is invalid; '
                                 f'valid choices are {sorted(UNIT_KERNELS)} (0/1/2: 3x3/5x5/'
                                 '7x7 shuffle unit, 3: Xception)')

    def _unit_options(self, stage: int, index: int) -> dict:
        """Extra :class:`ShuffleUnit` arguments of unit ``index`` of ``stage`` (none here;
        the SFR subclasses add the reactivation)."""
        return {}

    # ------------------------------------------------------------------ init / train
    def _reference_init(self) -> None:
        """megvii's initialisation: N(0, 0.01) stem/SE convs, N(0, 1/fan_in) others."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                std = 0.01 if name.startswith('stem') or '.fc.' in name else \
                    1.0 / m.weight.shape[1]
                nn.init.normal_(m.weight, 0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.constant_(m.bias, 1e-4)

    def stage_modules(self) -> list[nn.Module]:
        return list(self.stages)

    # ------------------------------------------------------------------ deploy
    def convert_own_parts(self, name: str = '') -> None:
        """Fold the BatchNorms of the stem and ``conv_last`` into their convs (the
        units fold their own, :meth:`ShuffleUnit.convert_own_parts`).

        ``switch_to_deploy()`` converts the whole backbone in place, exact in eval
        mode: conv -> BN pairs folded into single convs, sparse feature
        reactivations (if any) converted. The result loads and saves the state_dict
        of the same model built with ``deploy=True``; it can no longer be trained (no
        BatchNorm statistics). An SFR whose condensation is unfinished stops it with
        a ``RuntimeError`` naming the layer, the model left unchanged.

        Example:
            >>> model = ShuffleNetV2(arch='0.5x').eval()
            >>> x = torch.rand(1, 3, 64, 64)
            >>> before = model(x)
            >>> model.switch_to_deploy()
            >>> model.stem.with_norm, model.deploy
            (False, True)
            >>> all(torch.allclose(a, b, atol=1e-5) for a, b in zip(model(x), before))
            True
        """
        self.stem = fuse_conv_module(self.stem)
        if self.conv_last is not None:
            self.conv_last = fuse_conv_module(self.conv_last)
        self.deploy = True

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return the features of the levels in ``out_indices``, in that order."""
        x = self.stem(x)
        levels: dict[int, torch.Tensor] = {}
        if self.maxpool is not None:
            x = self.maxpool(x)
            levels[0] = x
        for s, stage in enumerate(self.stages):
            x = stage(x)
            levels[self._stage_offset + s] = x
        if self.conv_last is not None:
            levels[self._last_index] = self.conv_last(x)
        return tuple(levels[i] for i in self.out_indices)

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: list[str],
                              unexpected_keys: list[str], error_msgs: list[str]) -> None:
        """Refuse, naming both, weights of another width, form or (when visible)
        layout. A deploy model folds the BatchNorms of train-time weights as it loads
        them (exact, as :meth:`switch_to_deploy`)."""
        if self.deploy:
            eps = self.norm_cfg.get('eps', 1e-5)
            for name, module in self.named_modules():
                if isinstance(module, ConvModule) and not module.with_norm:
                    fold_state_dict_norms(state_dict, f'{prefix}{name}.', eps)
        elif (f'{prefix}stem.conv.bias' in state_dict
              and f'{prefix}stem.bn.running_mean' not in state_dict and self.stem.with_norm):
            raise ValueError(
                f'{type(self).__name__}: the checkpoint holds the deploy form (BatchNorm '
                'folded into the convs) but the model is built in its train-time form; '
                'build it with deploy=True (the *_deploy_*.py configs)')
        found = self._widths_in_state_dict(state_dict, prefix)
        if found is not None:
            in_widths = (self.arch['stem_channels'], ) + found[0][:-1]
            mine = self.arch['stage_channels']
            if found[0] != mine:
                raise ValueError(
                    f'{type(self).__name__}: the checkpoint is {self._describe(found[0])} but '
                    f'the model is {self._describe(mine)}; pick the config of that arch')
            # The stride-2 projection keeps `in` channels (megvii) or out/2 (torchvision);
            # the two agree when out == 2 * in (e.g. 0.5x), which cannot be told apart.
            for s, proj in enumerate(found[1]):
                megvii, tv = in_widths[s], mine[s] // 2
                if megvii != tv and proj in (megvii, tv):
                    layout = 'megvii' if proj == megvii else 'torchvision'
                    if layout != self.layout:
                        raise ValueError(
                            f'{type(self).__name__}: the checkpoint has the {layout!r} '
                            f'layout but the model is built with layout={self.layout!r}; '
                            f"set layout='{layout}' (or convert the weights with the "
                            'converter of their source)')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    @staticmethod
    def _widths_in_state_dict(state_dict: dict, prefix: str) -> tuple | None:
        """Stage widths and projection widths of the stride-2 units in a state_dict."""
        pattern = re.compile(re.escape(prefix) +
                             r'stages\.(\d+)\.0\.branch_(main|proj)\.(\d+)\.conv\.weight$')
        last: dict[tuple[int, str], tuple[int, int]] = {}
        for key, value in state_dict.items():
            m = pattern.match(key)
            if m:
                k = (int(m[1]), m[2])
                if k not in last or int(m[3]) > last[k][0]:
                    last[k] = (int(m[3]), value.shape[0])
        stages = sorted({s for s, _ in last})
        if not stages or stages != list(range(len(stages))) or any(
                (s, b) not in last for s in stages for b in ('main', 'proj')):
            return None
        proj = tuple(last[(s, 'proj')][1] for s in stages)
        widths = tuple(last[(s, 'main')][1] + p for s, p in zip(stages, proj))
        return widths, proj

    def _describe(self, widths: Sequence[int]) -> str:
        widths = tuple(widths)
        for name, s in type(self).arch_settings.items():
            if tuple(s['stage_channels']) == widths:
                return f'{type(self).__name__} {name} (stage widths {widths})'
        return f'a custom {type(self).__name__} (stage widths {widths})'


@MODELS.register_module()
class ShuffleNetV2Plus(ShuffleNetV2):
    """megvii's ShuffleNetV2+ backbone (hard-swish, SE, 3x3/5x5/7x7/Xception units).

    Stem: conv 3x3 stride 2 (16) + BN + hard-swish, no max-pool. Four stages of
    4/4/8/4 units (ReLU in stage 1, hard-swish after, SE in stages 3-4), unit types
    from ``unit_choices``. Output levels:

    =====  ==================================  ======  ========================
    index  module                              stride  channels (small)
    =====  ==================================  ======  ========================
    0-3    stages of 4 / 4 / 8 / 4 units       4-32    36 / 104 / 208 / 416
    4      ``conv_last`` (1x1 + BN + HS)       32      1280
    =====  ==================================  ======  ========================

    ``conv_last`` is built only when index 4 is requested (classification:
    ``out_indices=(4,)`` + ``GlobalAveragePooling`` +
    :class:`~mmsfr.models.heads.ShuffleNetV2PlusClsHead`). The released weights expect
    BGR input in 0-255 without normalisation.

    Args:
        arch: ``'small'``, ``'medium'``, ``'large'`` (case-insensitive) or a dict as for
            :class:`ShuffleNetV2`. Default ``'small'``.
        layout: ``'megvii'`` (released weights) or ``'torchvision'``.
        out_indices: Output levels. Default: 0-3.
        frozen_stages: Freeze the stem (0) and the first ``frozen_stages`` stages.
        norm_cfg: Norm config of every conv (the SE norms stay BatchNorm).
        norm_eval: Keep BatchNorm layers in eval mode during training.
        with_cp: Gradient checkpointing of every unit.
        init_cfg: mmengine init config.

    Example:
        >>> import torch
        >>> model = ShuffleNetV2Plus(arch='small', out_indices=(0, 1, 2, 3, 4)).eval()
        >>> for out in model(torch.rand(1, 3, 224, 224)):
        ...     print(tuple(out.shape))
        (1, 36, 56, 56)
        (1, 104, 28, 28)
        (1, 208, 14, 14)
        (1, 416, 7, 7)
        (1, 1280, 7, 7)
    """

    # Legend as in ShuffleNetV2.arch_settings.
    arch_settings: dict[str, dict] = {
        'small': dict(stage_channels=(36, 104, 208, 416)),
        'medium': dict(stage_channels=(48, 128, 256, 512)),
        'large': dict(stage_channels=(68, 168, 336, 672)),
    }
    arch_defaults: dict = dict(stage_blocks=(4, 4, 8, 4), stem_channels=16,
                               last_channels=1280, maxpool=False, stem_act='HSwish',
                               unit_choices=SHUFFLENETV2PLUS_UNITS,
                               stage_acts=('ReLU', 'HSwish', 'HSwish', 'HSwish'),
                               stage_se=(False, False, True, True))
    default_arch = 'small'

    def __init__(self, arch: str | dict = 'small', layout: str = 'megvii',
                 out_indices: Sequence[int] | None = None, frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN'), norm_eval: bool = False,
                 with_cp: bool = False, deploy: bool = False,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(arch=arch, layout=layout, out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_cfg=norm_cfg,
                         norm_eval=norm_eval, with_cp=with_cp, deploy=deploy,
                         init_cfg=init_cfg)


# ---------------------------------------------------------------------------- SFR
class _SFRMixin:
    """Sparse feature reactivation in the stride-1 units of a ShuffleNetV2 / V2+.

    Adds to the host's ``arch_settings`` the keys ``sfr_factors`` (S per stage; None:
    half the stage width), ``sfr_groups`` (G per stage or one int; None: G = S) and
    ``sfr_kernel_size`` (3); the host's :meth:`switch_to_deploy` converts the SFRs.
    """

    SFR_KEYS = ('sfr_factors', 'sfr_groups', 'sfr_kernel_size')
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

    def _init_sfr(self) -> None:
        """Undo the host's BN init on the SFR norms: reactivation starts from zero."""
        for unit in self.sfr_units():
            if not unit.sfr.deploy:
                nn.init.zeros_(unit.sfr.norm.weight)
                nn.init.zeros_(unit.sfr.norm.bias)

    def sfr_units(self) -> list[ShuffleUnit]:
        """The units that carry a sparse feature reactivation."""
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
    arch_defaults: dict = dict(ShuffleNetV2.arch_defaults, sfr_factors=None,
                               sfr_groups=None, sfr_kernel_size=3)
    default_arch = '1.0x'

    def __init__(self, arch: str | dict | None = None, widen_factor: float | None = None,
                 layout: str = 'megvii', out_indices: Sequence[int] | None = None,
                 frozen_stages: int = -1, norm_cfg: dict = dict(type='BN'),
                 norm_eval: bool = False, with_cp: bool = False, deploy: bool = False,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(arch=arch, widen_factor=widen_factor, layout=layout,
                         out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_cfg=norm_cfg, norm_eval=norm_eval, with_cp=with_cp,
                         deploy=deploy, init_cfg=init_cfg)
        self._init_sfr()


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
    arch_defaults: dict = dict(ShuffleNetV2Plus.arch_defaults, sfr_factors=None,
                               sfr_groups=None, sfr_kernel_size=3)
    default_arch = 'small'

    def __init__(self, arch: str | dict = 'small', layout: str = 'megvii',
                 out_indices: Sequence[int] | None = None, frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN'), norm_eval: bool = False,
                 with_cp: bool = False, deploy: bool = False,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(arch=arch, layout=layout, out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_cfg=norm_cfg,
                         norm_eval=norm_eval, with_cp=with_cp, deploy=deploy,
                         init_cfg=init_cfg)
        self._init_sfr()


# ---------------------------------------------------------------------------- weights
_MEGVII_SHUFFLE_MAIN = {0: '0.conv', 1: '0.bn', 3: '1.conv', 4: '1.bn', 5: '2.conv',
                        6: '2.bn', 8: '3'}
_MEGVII_XCEPTION_MAIN = {0: '0.conv', 1: '0.bn', 2: '1.conv', 3: '1.bn', 5: '2.conv',
                         6: '2.bn', 7: '3.conv', 8: '3.bn', 10: '4.conv', 11: '4.bn',
                         12: '5.conv', 13: '5.bn', 15: '6'}
_MEGVII_PROJ = {0: '0.conv', 1: '0.bn', 2: '1.conv', 3: '1.bn'}
_MEGVII_SE = {1: 'fc.0', 2: 'fc.1', 4: 'fc.3'}  # SE_opr.{1,2,4}: conv, BN, conv
_MEGVII_FEATURE = re.compile(r'^features\.(\d+)\.branch_(main|proj)\.(\d+)\.(.+)$')
_TV_UNIT = re.compile(r'^stage(\d+)\.(\d+)\.branch([12])\.(\d+)\.(.+)$')
_TV_BRANCH2 = {0: '0.conv', 1: '0.bn', 3: '1.conv', 4: '1.bn', 5: '2.conv', 6: '2.bn'}


def _describe_source(sd: dict[str, torch.Tensor]) -> str:
    """Name the family of a (prefix-stripped) ShuffleNet state_dict, for errors."""
    if 'conv1.0.weight' in sd and any(k.startswith('stage2.') for k in sd):
        return 'a torchvision ShuffleNetV2 state_dict (use convert_torchvision_shufflenetv2)'
    if 'first_conv.0.weight' in sd:
        units = {int(m[1]) for m in map(_MEGVII_FEATURE.match, sd) if m}
        if len(units) == 20:
            return ('a megvii ShuffleNetV2+ state_dict (20 units; use '
                    'convert_official_shufflenetv2plus)')
        if len(units) == 16:
            return ('a megvii ShuffleNetV2 state_dict (16 units; use '
                    'convert_official_shufflenetv2)')
        return f'a megvii-style state_dict with {len(units)} units'
    if any(k.startswith('backbone.') for k in sd):
        return 'an already converted mmsfr state_dict (backbone.* keys)'
    return f'an unknown state_dict (first keys {list(sd)[:3]})'


def _match_arch(model_cls: type, width: int, arch: str | None, what: str) -> str:
    """Find the arch whose last stage is ``width`` wide; check it against ``arch``."""
    known = {n: s['stage_channels'][-1] for n, s in model_cls.arch_settings.items()}
    names = [n for n, w in known.items() if w == width]
    if not names:
        raise ValueError(f'{what}: last stage width {width} matches no {model_cls.__name__} '
                         f'arch; known last-stage widths are {known}')
    found = names[0]
    if arch is not None:
        wanted = model_cls.resolve_arch(arch)[0]
        if wanted != found:
            raise ValueError(f'{what}: the checkpoint is {model_cls.__name__} {found} but '
                             f'the model is {model_cls.__name__} {wanted}; pick the {found} '
                             'config or the matching checkpoint')
    return found


def _megvii_units(sd: dict[str, torch.Tensor], stage_blocks: Sequence[int],
                  expected: str, out: dict[str, torch.Tensor]) -> list[tuple[int, bool]]:
    """Map megvii ``features.{n}`` keys into ``out``; return (kernel, xception) per unit."""
    starts = [sum(stage_blocks[:s]) for s in range(len(stage_blocks))]
    units = {int(m[1]) for m in map(_MEGVII_FEATURE.match, sd) if m}
    if units != set(range(sum(stage_blocks))):
        raise ValueError(f'{expected} expects a megvii checkpoint with {sum(stage_blocks)} '
                         f'units, got {_describe_source(sd)}')
    kinds = []
    for n in range(sum(stage_blocks)):
        xception = f'features.{n}.branch_main.2.weight' in sd
        kernel = 3 if xception else sd[f'features.{n}.branch_main.3.weight'].shape[-1]
        kinds.append((kernel, xception))
    for key, value in sd.items():
        m = _MEGVII_FEATURE.match(key)
        if not m:
            continue
        n, branch, index, rest = int(m[1]), m[2], int(m[3]), m[4]
        stage = max(s for s in range(len(starts)) if starts[s] <= n)
        table = _MEGVII_PROJ if branch == 'proj' else (
            _MEGVII_XCEPTION_MAIN if kinds[n][1] else _MEGVII_SHUFFLE_MAIN)
        if index not in table:
            raise ValueError(f'{expected}: unexpected key {key!r}')
        name = table[index]
        if rest.startswith('SE_opr.'):
            _, k, param = rest.split('.', 2)
            rest = f'{_MEGVII_SE[int(k)]}.{param}'
        out[f'backbone.stages.{stage}.{n - starts[stage]}.branch_{branch}.{name}.{rest}'] = value
    return kinds


def _take(sd: dict[str, torch.Tensor], src: str, dst: str,
          out: dict[str, torch.Tensor]) -> None:
    for key, value in sd.items():
        if key.startswith(src):
            out[dst + key[len(src):]] = value


def convert_official_shufflenetv2(state_dict: dict[str, torch.Tensor],
                                  arch: str | None = None) -> dict[str, torch.Tensor]:
    """Map a megvii ShuffleNetV2 state_dict to mmsfr ``ImageClassifier`` keys.

    The result fits ``ImageClassifier(backbone=ShuffleNetV2(layout='megvii',
    out_indices=(4,)), neck=GlobalAveragePooling, head=ShuffleNetV2ClsHead(bias=False))``.
    ``module.`` prefixes are dropped.

    Args:
        state_dict: megvii's ``checkpoint['state_dict']``.
        arch: The arch of the model to load into ('0.5x' ...); when given, a checkpoint
            of another width raises.

    Returns:
        The converted state_dict (``backbone.*`` and ``head.fc.weight``).

    Raises:
        ValueError: if the input is not a megvii ShuffleNetV2 checkpoint (naming what it
            is instead) or its width differs from ``arch``.
    """
    sd = strip_module_prefix(state_dict)
    what = 'convert_official_shufflenetv2'
    if 'first_conv.0.weight' not in sd or 'conv_last.0.weight' not in sd:
        raise ValueError(f'{what} expects a megvii ShuffleNetV2 state_dict, got '
                         f'{_describe_source(sd)}')
    out: dict[str, torch.Tensor] = {}
    kinds = _megvii_units(sd, ShuffleNetV2.arch_defaults['stage_blocks'], what, out)
    if sd['first_conv.0.weight'].shape[0] != 24 or any(k != (3, False) for k in kinds):
        raise ValueError(f'{what} expects a megvii ShuffleNetV2 state_dict, got '
                         f'{_describe_source(sd)}')
    _match_arch(ShuffleNetV2, sd['conv_last.0.weight'].shape[1], arch, what)
    _take(sd, 'first_conv.0.', 'backbone.stem.conv.', out)
    _take(sd, 'first_conv.1.', 'backbone.stem.bn.', out)
    _take(sd, 'conv_last.0.', 'backbone.conv_last.conv.', out)
    _take(sd, 'conv_last.1.', 'backbone.conv_last.bn.', out)
    _take(sd, 'classifier.0.', 'head.fc.', out)
    _check_all_used(sd, out, what)
    return out


def convert_official_shufflenetv2plus(
        state_dict: dict[str, torch.Tensor], arch: str | None = None,
        unit_choices: Sequence[int] = SHUFFLENETV2PLUS_UNITS) -> dict[str, torch.Tensor]:
    """Map a megvii ShuffleNetV2+ state_dict to mmsfr ``ImageClassifier`` keys.

    The result fits ``ImageClassifier(backbone=ShuffleNetV2Plus(out_indices=(4,)),
    neck=GlobalAveragePooling, head=ShuffleNetV2PlusClsHead)``.

    Args:
        state_dict: megvii's ``checkpoint['state_dict']`` (``module.`` keys).
        arch: The arch of the model to load into ('small', 'medium', 'large'); when
            given, a checkpoint of another width raises.
        unit_choices: The unit types the model is built with; a checkpoint whose
            units differ raises.

    Returns:
        The converted state_dict (``backbone.*``, ``head.se.*``, ``head.fc.weight``,
        ``head.classifier.weight``).

    Raises:
        ValueError: if the input is not a megvii ShuffleNetV2+ checkpoint, or its width
            or unit types differ from ``arch`` / ``unit_choices``.
    """
    sd = strip_module_prefix(state_dict)
    what = 'convert_official_shufflenetv2plus'
    if 'first_conv.0.weight' not in sd or 'LastSE.SE_opr.1.weight' not in sd:
        raise ValueError(f'{what} expects a megvii ShuffleNetV2+ state_dict, got '
                         f'{_describe_source(sd)}')
    out: dict[str, torch.Tensor] = {}
    kinds = _megvii_units(sd, ShuffleNetV2Plus.arch_defaults['stage_blocks'], what, out)
    found = tuple(XCEPTION if x else {3: 0, 5: 1, 7: 2}[k] for k, x in kinds)
    if found != tuple(unit_choices):
        n = next(i for i, (a, b) in enumerate(zip(found, unit_choices)) if a != b)
        raise ValueError(f'{what}: the checkpoint has unit choices {list(found)} but the '
                         f'model has {list(unit_choices)} (first difference at unit {n})')
    _match_arch(ShuffleNetV2Plus, sd['conv_last.0.weight'].shape[1], arch, what)
    _take(sd, 'first_conv.0.', 'backbone.stem.conv.', out)
    _take(sd, 'first_conv.1.', 'backbone.stem.bn.', out)
    _take(sd, 'conv_last.0.', 'backbone.conv_last.conv.', out)
    _take(sd, 'conv_last.1.', 'backbone.conv_last.bn.', out)
    for k, name in _MEGVII_SE.items():
        _take(sd, f'LastSE.SE_opr.{k}.', f'head.se.{name}.', out)
    _take(sd, 'fc.0.', 'head.fc.', out)
    _take(sd, 'classifier.0.', 'head.classifier.', out)
    _check_all_used(sd, out, what)
    return out


def convert_torchvision_shufflenetv2(state_dict: dict[str, torch.Tensor],
                                     arch: str | None = None) -> dict[str, torch.Tensor]:
    """Map torchvision's ``shufflenet_v2_x*`` state_dict to mmsfr classifier keys.

    The result fits ``ImageClassifier(backbone=ShuffleNetV2(layout='torchvision',
    out_indices=(4,)), neck=GlobalAveragePooling, head=ShuffleNetV2ClsHead(bias=True))``
    (or mmpretrain's ``LinearClsHead``, whose keys are the same). The weights expect
    ImageNet RGB mean/std normalisation.

    Args:
        state_dict: ``torchvision.models.shufflenet_v2_x1_0().state_dict()`` or another
            width.
        arch: The arch of the model to load into; when given, another width raises.

    Returns:
        The converted state_dict (``backbone.*``, ``head.fc.{weight,bias}``).

    Raises:
        ValueError: if the input is not a torchvision ShuffleNetV2 state_dict or its
            width differs from ``arch``.
    """
    sd = strip_module_prefix(state_dict)
    what = 'convert_torchvision_shufflenetv2'
    if 'conv1.0.weight' not in sd or 'conv5.0.weight' not in sd:
        raise ValueError(f'{what} expects a torchvision ShuffleNetV2 state_dict, got '
                         f'{_describe_source(sd)}')
    _match_arch(ShuffleNetV2, sd['conv5.0.weight'].shape[1], arch, what)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = _TV_UNIT.match(key)
        if not m:
            continue
        stage, unit, branch, index, rest = int(m[1]) - 2, int(m[2]), m[3], int(m[4]), m[5]
        table = _MEGVII_PROJ if branch == '1' else _TV_BRANCH2
        if index not in table:
            raise ValueError(f'{what}: unexpected key {key!r}')
        name = 'proj' if branch == '1' else 'main'
        out[f'backbone.stages.{stage}.{unit}.branch_{name}.{table[index]}.{rest}'] = value
    _take(sd, 'conv1.0.', 'backbone.stem.conv.', out)
    _take(sd, 'conv1.1.', 'backbone.stem.bn.', out)
    _take(sd, 'conv5.0.', 'backbone.conv_last.conv.', out)
    _take(sd, 'conv5.1.', 'backbone.conv_last.bn.', out)
    _take(sd, 'fc.', 'head.fc.', out)
    _check_all_used(sd, out, what)
    return out


def _check_all_used(sd: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
                    what: str) -> None:
    if len(out) != len(sd):
        used = {id(v) for v in out.values()}
        left = [k for k, v in sd.items() if id(v) not in used]
        raise ValueError(f'{what}: keys not understood: {left[:5]}')
