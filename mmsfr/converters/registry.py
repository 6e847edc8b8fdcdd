"""The released models mmsfr converts: key map and matching configs of each."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from .condensenet import convert_official_condensenet
from .shufflenetv2 import (convert_official_shufflenetv2, convert_official_shufflenetv2plus,
                           convert_torchvision_shufflenetv2)

__all__ = ['OFFICIAL_MODELS', 'OfficialModel']


@dataclass(frozen=True)
class OfficialModel:
    """A released model: how to map its keys and which configs load the result.

    Attributes:
        convert: Maps the released state_dict to mmsfr ``ImageClassifier`` keys.
        deploy_config: The config that loads the converted weights as released.
        train_config: The config of the train-time form (the same config for the
            models with nothing to condense).

    Example:
        >>> entry = OFFICIAL_MODELS['shufflenetv2_x1_0']
        >>> entry.convert.func.__name__, entry.convert.keywords
        ('convert_official_shufflenetv2', {'arch': '1.0x'})
    """

    convert: Callable[[dict], dict]
    deploy_config: str
    train_config: str


def _cdn(family: str, arch: str) -> OfficialModel:
    base = f'configs/pretrain/{family}/{family}-{arch}'
    return OfficialModel(convert_official_condensenet, f'{base}_deploy_in1k.py',
                         f'{base}_8xb128_in1k.py')


#: Released checkpoints ``tools/model_converters/official_to_mmsfr.py`` understands.
OFFICIAL_MODELS: dict[str, OfficialModel] = {
    'condensenetv2_a': _cdn('condensenetv2', 'a'),
    'condensenetv2_b': _cdn('condensenetv2', 'b'),
    'condensenetv2_c': _cdn('condensenetv2', 'c'),
    'condensenet_v1_g4': _cdn('condensenet', 'v1-g4'),
    'condensenet_v1_g8': _cdn('condensenet', 'v1-g8'),
    # megvii ShuffleNet-Series releases ({'state_dict'} with `module.` keys) and
    # torchvision's shufflenet_v2_x* state_dicts. Nothing to condense: both config
    # fields name the same config (the torchvision ones: the *-tv layout configs).
    **{
        f'shufflenetv2_x{w}': OfficialModel(
            partial(convert_official_shufflenetv2, arch=f"{w.replace('_', '.')}x"),
            f'configs/pretrain/shufflenetv2/shufflenetv2-x{w}_8xb128_in1k.py',
            f'configs/pretrain/shufflenetv2/shufflenetv2-x{w}_8xb128_in1k.py')
        for w in ('0_5', '1_0', '1_5', '2_0')
    },
    **{
        f'shufflenetv2plus_{a}': OfficialModel(
            partial(convert_official_shufflenetv2plus, arch=arch),
            f'configs/pretrain/shufflenetv2/shufflenetv2plus-{a}_8xb128_in1k.py',
            f'configs/pretrain/shufflenetv2/shufflenetv2plus-{a}_8xb128_in1k.py')
        for a, arch in (('s', 'small'), ('m', 'medium'), ('l', 'large'))
    },
    **{
        f'torchvision_shufflenetv2_x{w}': OfficialModel(
            partial(convert_torchvision_shufflenetv2, arch=f"{w.replace('_', '.')}x"),
            f'configs/pretrain/shufflenetv2/shufflenetv2-x{w}-tv_8xb128_in1k.py',
            f'configs/pretrain/shufflenetv2/shufflenetv2-x{w}-tv_8xb128_in1k.py')
        for w in ('0_5', '1_0', '1_5', '2_0')
    },
}
