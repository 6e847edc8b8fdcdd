"""Converter of the authors' released CondenseNet / CondenseNetV2 checkpoints.

:func:`convert_official_condensenet` maps the state_dicts of ``jianghaojun/CondenseNetV2``
and ``ShichenLiu/CondenseNet`` (train-time or converted) to the keys of an mmpretrain
``ImageClassifier`` with an mmsfr backbone (:mod:`mmsfr.models.backbones.condensenet`).
"""
from __future__ import annotations

import re

import torch

from ..checkpoint import strip_module_prefix

__all__ = ['convert_official_condensenet']

_OFFICIAL_LAYER = re.compile(r'^features\.denseblock_(\d+)\.denselayer_(\d+)\.(.+)$')


def convert_official_condensenet(state_dict: dict[str, torch.Tensor],
                                 num_blocks: int = 5) -> dict[str, torch.Tensor]:
    """Map a reference CondenseNet/CondenseNetV2 state_dict to mmsfr's classifier keys.

    Handles the train-time (masked) and the converted forms of the authors' code
    (``jianghaojun/CondenseNetV2``, ``ShichenLiu/CondenseNet``): ``module.`` prefixes
    are dropped, the dense float SFR scatter matrix ``sfr.index`` becomes the integer
    index of :class:`~mmsfr.models.layers.SparseFeatureReactivation` (each of its rows
    holds exactly one 1).

    Args:
        state_dict: The reference state_dict (``checkpoint['state_dict']``).
        num_blocks: Dense blocks of the model (5 for ImageNet archs).

    Returns:
        A state_dict for an mmpretrain ``ImageClassifier`` with an mmsfr backbone.

    Raises:
        ValueError: if the keys are not those of a reference CondenseNet.

    Example:
        >>> import torch
        >>> reference = {
        ...     'module.features.init_conv.weight': torch.zeros(16, 3, 3, 3),
        ...     'module.features.denseblock_1.denselayer_1.conv_1.norm.weight': torch.ones(16),
        ...     'module.features.denseblock_1.denselayer_1.sfr.index': torch.eye(4)}
        >>> converted = convert_official_condensenet(reference)
        >>> for key, value in converted.items():
        ...     print(key, tuple(value.shape))
        backbone.stem.weight (16, 3, 3, 3)
        backbone.blocks.0.0.conv_1.norm.weight (16,)
        backbone.blocks.0.0.sfr.index (4,)
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    # CondenseNetV2 has an SE + hidden fc before its classifier; v1 a single Linear.
    v1_classifier = not any(k.endswith(('se_last.fc.0.weight', 'fc.weight'))
                            and 'denseblock' not in k for k in state_dict)
    for key, value in strip_module_prefix(state_dict).items():
        m = _OFFICIAL_LAYER.match(key)
        if m:
            block, layer, rest = int(m[1]) - 1, int(m[2]) - 1, m[3]
            if rest == 'sfr.index' and value.dim() == 2:
                ones = value.sum(1)
                if not torch.all(ones == 1):
                    raise ValueError(f'{key}: every row of the SFR scatter matrix must hold '
                                     'exactly one 1')
                value = value.argmax(1)
            out[f'backbone.blocks.{block}.{layer}.{rest}'] = value
        elif key == 'features.init_conv.weight':
            out['backbone.stem.weight'] = value
        elif key.startswith('features.norm_last.'):
            out[f'backbone.norms.{num_blocks - 1}.' + key.split('.', 2)[2]] = value
        elif key.startswith('features.se_last.'):
            out['head.se.' + key.split('.', 2)[2]] = value
        elif v1_classifier and key.startswith('classifier.'):
            # v1: train-time Linear ``classifier.*`` or condensed ``classifier.{index,linear.*}``
            rest = key.split('.', 1)[1]
            out['head.fc.' + (rest if rest.startswith(('index', 'linear.')) else 'linear.' + rest)] = value
        elif key.split('.')[0] in ('fc', 'classifier'):
            out['head.' + key] = value
        else:
            unknown.append(key)
    if unknown or 'backbone.stem.weight' not in out:
        raise ValueError(
            'not a reference CondenseNet/CondenseNetV2 state_dict: expected keys like '
            "'features.init_conv.weight' and 'features.denseblock_1.denselayer_1.conv_1.*', "
            f'found unexpected keys {unknown[:5]}')
    return out
