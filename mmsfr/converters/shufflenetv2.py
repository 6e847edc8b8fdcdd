"""Converters of the released ShuffleNet checkpoints to mmsfr keys.

* :func:`convert_official_shufflenetv2` / :func:`convert_official_shufflenetv2plus`:
  megvii's ShuffleNet-Series releases (``{'state_dict'}`` with ``module.`` keys);
* :func:`convert_torchvision_shufflenetv2`: torchvision's ``shufflenet_v2_x*``.

Each recognises what it is given and, when it is the wrong source, names what it is
(and which converter takes it). :func:`stage_layouts` tells the two unit layouts
(:mod:`mmsfr.models.backbones.shufflenetv2`) apart from the widths of a checkpoint's
stride-2 units; :class:`~mmsfr.models.ShuffleNetV2` uses it to refuse weights of the
other layout.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch

from ..checkpoint import strip_module_prefix

__all__ = ['convert_official_shufflenetv2', 'convert_official_shufflenetv2plus',
           'convert_torchvision_shufflenetv2', 'stage_layouts']

# The backbone classes are imported inside the functions: mmsfr.models.backbones
# re-exports these converters, so a module-level import would be circular.
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


#: The stem and ``conv_last`` (conv, BN) of a megvii ShuffleNetV2 / V2+ checkpoint and
#: their mmsfr keys.
_MEGVII_STEM_AND_LAST = (('first_conv.0.', 'backbone.stem.conv.'),
                         ('first_conv.1.', 'backbone.stem.bn.'),
                         ('conv_last.0.', 'backbone.conv_last.conv.'),
                         ('conv_last.1.', 'backbone.conv_last.bn.'))


def _take(sd: dict[str, torch.Tensor], src: str, dst: str,
          out: dict[str, torch.Tensor]) -> None:
    """Copy every entry of ``sd`` under ``src`` into ``out`` under ``dst``."""
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

    Example:
        >>> import torch
        >>> torchvision_keys = {'conv1.0.weight': torch.zeros(24, 3, 3, 3),
        ...                     'stage2.0.branch1.0.weight': torch.zeros(24, 1, 3, 3)}
        >>> convert_official_shufflenetv2(torchvision_keys)
        Traceback (most recent call last):
        ...
        ValueError: convert_official_shufflenetv2 expects a megvii ShuffleNetV2 state_dict, got a torchvision ShuffleNetV2 state_dict (use convert_torchvision_shufflenetv2)
    """
    from ..models.backbones.shufflenetv2 import ShuffleNetV2
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
    for src, dst in _MEGVII_STEM_AND_LAST:
        _take(sd, src, dst, out)
    _take(sd, 'classifier.0.', 'head.fc.', out)
    _check_all_used(sd, out, what)
    return out


def convert_official_shufflenetv2plus(
        state_dict: dict[str, torch.Tensor], arch: str | None = None,
        unit_choices: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Map a megvii ShuffleNetV2+ state_dict to mmsfr ``ImageClassifier`` keys.

    The result fits ``ImageClassifier(backbone=ShuffleNetV2Plus(out_indices=(4,)),
    neck=GlobalAveragePooling, head=ShuffleNetV2PlusClsHead)``.

    Args:
        state_dict: megvii's ``checkpoint['state_dict']`` (``module.`` keys).
        arch: The arch of the model to load into ('small', 'medium', 'large'); when
            given, a checkpoint of another width raises.
        unit_choices: The unit types the model is built with; a checkpoint whose
            units differ raises. None: those of :class:`~mmsfr.models.ShuffleNetV2Plus`
            (and of megvii's released models).

    Returns:
        The converted state_dict (``backbone.*``, ``head.se.*``, ``head.fc.weight``,
        ``head.classifier.weight``).

    Raises:
        ValueError: if the input is not a megvii ShuffleNetV2+ checkpoint, or its width
            or unit types differ from ``arch`` / ``unit_choices``.

    Example:
        >>> import torch
        >>> convert_official_shufflenetv2plus({'x.weight': torch.zeros(1)})
        Traceback (most recent call last):
        ...
        ValueError: convert_official_shufflenetv2plus expects a megvii ShuffleNetV2+ state_dict, got an unknown state_dict (first keys ['x.weight'])
    """
    from ..models.backbones.shufflenetv2 import XCEPTION, ShuffleNetV2Plus
    if unit_choices is None:
        unit_choices = ShuffleNetV2Plus.arch_defaults['unit_choices']
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
    for src, dst in _MEGVII_STEM_AND_LAST:
        _take(sd, src, dst, out)
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

    Example:
        >>> import torch
        >>> some = {'conv1.0.weight': torch.zeros(24, 3, 3, 3),
        ...         'stage2.0.branch1.0.weight': torch.zeros(24, 1, 3, 3),
        ...         'conv5.0.weight': torch.zeros(1024, 464, 1, 1)}
        >>> for key in convert_torchvision_shufflenetv2(some, arch='1.0x'):
        ...     print(key)
        backbone.stages.0.0.branch_proj.0.conv.weight
        backbone.stem.conv.weight
        backbone.conv_last.conv.weight
    """
    from ..models.backbones.shufflenetv2 import ShuffleNetV2
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
    """Raise, naming a few, if some entries of ``sd`` did not make it into ``out``."""
    if len(out) != len(sd):
        used = {id(v) for v in out.values()}
        left = [k for k, v in sd.items() if id(v) not in used]
        raise ValueError(f'{what}: keys not understood: {left[:5]}')


def stage_layouts(stem_channels: int, stage_widths: Sequence[int],
                  proj_widths: Sequence[int]) -> tuple[str | None, ...]:
    """The unit layout each stage's stride-2 unit reveals, from a checkpoint's widths.

    A megvii projection branch keeps the unit's input channels, a torchvision one
    outputs half the unit's; a stage where the two agree (``out == 2 * in``, e.g. all
    of 0.5x) or the width is neither cannot be told (None).

    Args:
        stem_channels: Width of the stem (the input of the first stage).
        stage_widths: Output width of each stage (of the checkpoint).
        proj_widths: Output width of the projection branch of each stage's stride-2
            unit (of the checkpoint).

    Returns:
        ``'megvii'``, ``'torchvision'`` or None, per stage.

    Example:
        >>> stage_layouts(24, (116, 232, 464), (24, 116, 232))
        ('megvii', None, None)
        >>> stage_layouts(24, (116, 232, 464), (58, 116, 232))
        ('torchvision', None, None)
    """
    in_widths = (stem_channels, *stage_widths[:-1])
    layouts = []
    for cin, width, proj in zip(in_widths, stage_widths, proj_widths):
        megvii, tv = cin, width // 2
        layouts.append(None if megvii == tv or proj not in (megvii, tv) else
                       'megvii' if proj == megvii else 'torchvision')
    return tuple(layouts)
