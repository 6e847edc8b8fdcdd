"""mmsfr backbones: CondenseNetV2 / CondenseNet, ShuffleNetV2 / ShuffleNetV2+ and their
SFR variants, on the shared base :class:`~.base.FreezableBackbone`.

The converters of released weights live in :mod:`mmsfr.converters`; they are
re-exported here under their former names.
"""
from ...converters.shufflenetv2 import (convert_official_shufflenetv2,
                                        convert_official_shufflenetv2plus,
                                        convert_torchvision_shufflenetv2)
from .condensenet import CondenseNet, CondenseNetV2
from .sfr_shufflenetv2 import SFRShuffleNetV2, SFRShuffleNetV2Plus
from .shufflenetv2 import ShuffleNetV2, ShuffleNetV2Plus

__all__ = [
    'CondenseNet', 'CondenseNetV2', 'ShuffleNetV2', 'ShuffleNetV2Plus', 'SFRShuffleNetV2',
    'SFRShuffleNetV2Plus', 'convert_official_shufflenetv2',
    'convert_official_shufflenetv2plus', 'convert_torchvision_shufflenetv2'
]
