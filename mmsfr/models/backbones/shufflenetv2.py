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

The SFR variants live in :mod:`.sfr_shufflenetv2`, the converters of the released
checkpoints in :mod:`mmsfr.converters.shufflenetv2`.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Sequence

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..deploy import Deployable
from ..layers import (FastMaxPool2d, SparseFeatureReactivation, SqueezeExcitation,
                      channel_shuffle, fuse_conv_module, inference_fast_path)
from ..layers.fuse import fold_state_dict_norms
from ..layers.norm_act import is_plain_batchnorm
from .base import FreezableBackbone, resolve_out_indices
from ...utils.moved import moved_names

__all__ = ['ShuffleUnit', 'ShuffleNetV2', 'ShuffleNetV2Plus', 'conv_norm_act']

LAYOUTS = ('megvii', 'torchvision')
# ShuffleNetV2+ unit choices: 0/1/2 = shuffle unit with a 3x3/5x5/7x7 depthwise conv,
# 3 = Xception unit (three depthwise 3x3 + pointwise pairs).
UNIT_KERNELS = {0: 3, 1: 5, 2: 7, 3: 3}
XCEPTION = 3
SHUFFLENETV2PLUS_UNITS = (0, 0, 3, 1, 1, 1, 0, 0, 2, 0, 2, 1, 1, 0, 2, 0, 2, 1, 3, 2)
# The converters used to live here; `from .shufflenetv2 import convert_*` still works.
_MOVED_CONVERTERS = ('convert_official_shufflenetv2', 'convert_official_shufflenetv2plus',
                     'convert_torchvision_shufflenetv2')


def conv_norm_act(in_channels: int, out_channels: int, kernel_size: int = 1,
                  stride: int = 1, groups: int = 1, norm_cfg: dict | None = dict(type='BN'),
                  act_cfg: dict | None = dict(type='ReLU'),
                  deploy: bool = False) -> ConvModule:
    """``conv -> norm -> act`` (padding ``kernel_size // 2``), or its deploy form.

    The deploy form is what :func:`~mmsfr.models.layers.fuse_conv_module` makes of the
    train-time one: a norm that folds into the conv (a BatchNorm with running
    statistics) is left out and the conv gets a bias; any other norm is kept.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Conv kernel.
        stride: Conv stride.
        groups: Conv groups.
        norm_cfg: Norm after the conv, or None.
        act_cfg: Activation after the norm, or None.
        deploy: Build the deploy form.

    Returns:
        The ``ConvModule``.

    Example:
        >>> conv_norm_act(8, 16, 3).with_norm
        True
        >>> deploy = conv_norm_act(8, 16, 3, deploy=True)
        >>> deploy.with_norm, deploy.conv.bias is not None
        (False, True)
    """
    if deploy and norm_cfg is not None and is_plain_batchnorm(
            build_norm_layer(norm_cfg, out_channels)[1]):
        norm_cfg = None
    return ConvModule(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                      groups=groups, norm_cfg=norm_cfg, act_cfg=act_cfg)


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
        deploy: Build the deploy form directly: every conv -> BN pair as one conv with
            a bias (:func:`conv_norm_act`) and the SFR converted (grouped conv +
            ``index_add``), as :meth:`convert_own_parts` makes of the train-time unit.

    Example:
        >>> unit = ShuffleUnit(24, 116, stride=2)
        >>> unit(torch.rand(1, 24, 8, 8)).shape
        torch.Size([1, 116, 4, 4])
        >>> sfr_unit = ShuffleUnit(116, 116, sfr_factor=58)
        >>> sfr_unit.sfr.in_channels, sfr_unit.sfr.groups, sfr_unit.sfr.factor
        (58, 58, 58)
        >>> ShuffleUnit(116, 116, deploy=True).branch_main[0].with_norm
        False
    """

    changes_network = False  # its deploy form folds BatchNorms

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
        self.deploy = deploy

        def conv(cin: int, cout: int, k: int = 1, s: int = 1, act: bool = True,
                 dw: bool = False) -> ConvModule:
            return conv_norm_act(cin, cout, k, s, groups=cin if dw else 1,
                                 norm_cfg=norm_cfg, act_cfg=act_cfg if act else None,
                                 deploy=deploy)

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

    def convert_own_parts(self, name: str = '') -> None:
        """Fold the BatchNorm of every conv of both branches into the conv (exact in
        eval mode; convs with another norm are kept) and mark the unit deployed.

        The SFR is converted separately (it must be fully condensed first):
        :func:`~mmsfr.models.layers.convert_to_deploy` does both.

        Example:
            >>> unit = ShuffleUnit(24, 48, stride=2).eval()
            >>> unit.convert_own_parts()
            >>> unit.deploy, unit.branch_proj[1].with_norm
            (True, False)
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

    Subclasses change the defaults through class attributes, not through ``__init__``:
    ``default_arch`` (the arch when ``arch`` is None), ``arch_settings`` /
    ``arch_defaults`` (the arch table) and ``accepts_widen_factor``.

    Args:
        arch: ``'0.5x'``, ``'1.0x'``, ``'1.5x'``, ``'2.0x'`` or a dict with
            ``stage_channels`` (and optionally ``stage_blocks``, ``stem_channels``,
            ``last_channels``). Default (None): ``default_arch``, ``'1.0x'``.
        widen_factor: 0.5, 1.0, 1.5 or 2.0, an alternative to ``arch``.
        layout: ``'megvii'`` (the authors' released weights) or ``'torchvision'``.
        out_indices: Output levels (see the table), returned in this order, each at
            most once. Default: 0-3 (strides 4-32).
        frozen_stages: Freeze the stem (0) and the first ``frozen_stages`` stages as
            in mmdet; -1 freezes nothing.
        norm_cfg: Norm config of every conv.
        norm_eval: Keep BatchNorm layers in eval mode during training.
        with_cp: Gradient checkpointing of every unit.
        deploy: Build the inference form directly, every conv -> BN pair as one conv
            with a bias (the form :meth:`switch_to_deploy` makes of a train-time model,
            with the same state_dict keys). Train-time weights, e.g. the released
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
    arch_required = ('stage_channels', )
    arch_defaults: dict[str, Any] = dict(
        stage_blocks=(4, 8, 4), stem_channels=24, last_channels=1024, maxpool=True,
        stem_act='ReLU', unit_choices=None, stage_acts=None, stage_se=None)
    #: The arch built when ``arch`` is None.
    default_arch = '1.0x'
    #: Whether the archs are widths that ``widen_factor`` may name instead.
    accepts_widen_factor = True
    checkpoint_verb = 'is'

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
        self.frozen_stages = self._check_frozen_stages(frozen_stages, num_stages)
        self.layout = layout
        self.norm_cfg = norm_cfg
        self.out_indices = out_indices
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self._stage_offset = offset
        self._last_index = num_levels - 1

        stem_act = dict(type=settings['stem_act'])
        stem_channels = settings['stem_channels']
        self.stem = conv_norm_act(3, stem_channels, 3, 2, norm_cfg=norm_cfg,
                                  act_cfg=stem_act, deploy=deploy)
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
            self.conv_last = conv_norm_act(channels, settings['last_channels'],
                                           norm_cfg=norm_cfg, act_cfg=stem_act,
                                           deploy=deploy)

        self._set_levels(
            channels=([stem_channels] if offset else []) + list(settings['stage_channels'])
            + [settings['last_channels']],
            strides=[2**(s + 2) for s in range(offset + num_stages)]
            + [2**(offset + num_stages + 1)],
            modules=(['maxpool'] if offset else [])
            + [f'stages.{s}' for s in range(num_stages)] + ['conv_last'])
        self._reference_init()
        self._freeze_stages()

    # ------------------------------------------------------------------ arch
    @classmethod
    def _arch_from_widen_factor(cls, widen_factor: float) -> str:
        if not cls.accepts_widen_factor:
            raise TypeError(f'{cls.__name__} takes no widen_factor (got {widen_factor!r}); '
                            f'name its arch instead, one of {list(cls.arch_settings)}')
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
    def _arch_key(cls, name: str) -> str:
        return name.lower()

    @classmethod
    def _custom_arch(cls, arch: dict) -> dict:
        unknown = set(arch) - set(cls.arch_defaults) - set(cls.arch_required)
        if 'stage_channels' not in arch or unknown:
            raise ValueError(f'{cls.__name__}: a custom arch needs the key '
                             f"'stage_channels' and accepts "
                             f'{list(cls.arch_defaults)}; got keys {sorted(arch)}')
        settings = copy.deepcopy(cls.arch_defaults)
        settings.update(arch)
        return settings

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
    def _check_state_dict(self, state_dict: dict, prefix: str) -> None:
        """Refuse, naming both, weights of another form, width (the base's arch check)
        or, when visible, layout. A deploy model folds the BatchNorms of train-time
        weights as it loads them (exact, as :meth:`switch_to_deploy`)."""
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
        super()._check_state_dict(state_dict, prefix)
        found = self._widths_in_state_dict(state_dict, prefix)
        if found is None:
            return
        from ...converters.shufflenetv2 import stage_layouts
        for layout in stage_layouts(self.arch['stem_channels'], *found):
            if layout is not None and layout != self.layout:
                raise ValueError(
                    f'{type(self).__name__}: the checkpoint has the {layout!r} '
                    f'layout but the model is built with layout={self.layout!r}; '
                    f"set layout='{layout}' (or convert the weights with the "
                    'converter of their source)')

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

    def _arch_in_state_dict(self, state_dict: dict, prefix: str) -> tuple | None:
        found = self._widths_in_state_dict(state_dict, prefix)
        return None if found is None else found[0]

    def _arch_signature(self) -> tuple:
        return tuple(self.arch['stage_channels'])

    def _describe_arch(self, widths: Sequence[int]) -> str:
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

    The arguments are those of :class:`ShuffleNetV2` (give them by keyword), but for
    ``widen_factor``, which it does not take (a ``TypeError``).

    Args:
        arch: ``'small'``, ``'medium'``, ``'large'`` (case-insensitive) or a dict as for
            :class:`ShuffleNetV2`. Default ``'small'``.
        layout: ``'megvii'`` (released weights) or ``'torchvision'``.
        out_indices: Output levels. Default: 0-3.
        frozen_stages: Freeze the stem (0) and the first ``frozen_stages`` stages.
        norm_cfg: Norm config of every conv (the SE norms stay BatchNorm).
        norm_eval: Keep BatchNorm layers in eval mode during training.
        with_cp: Gradient checkpointing of every unit.
        deploy: Build the inference form directly (conv -> BN pairs folded).
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
    arch_defaults: dict[str, Any] = dict(
        stage_blocks=(4, 4, 8, 4), stem_channels=16, last_channels=1280, maxpool=False,
        stem_act='HSwish', unit_choices=SHUFFLENETV2PLUS_UNITS,
        stage_acts=('ReLU', 'HSwish', 'HSwish', 'HSwish'),
        stage_se=(False, False, True, True))
    default_arch = 'small'
    accepts_widen_factor = False


#: The converters moved to :mod:`mmsfr.converters.shufflenetv2`; their old address
#: still serves them (imported on first use: the converters import this module).
__getattr__ = moved_names(
    __name__, {name: 'mmsfr.converters.shufflenetv2' for name in _MOVED_CONVERTERS},
    warn=False)
