from .condensenet import CondenseNet, CondenseNetV2
from .shufflenetv2 import (SFRShuffleNetV2, SFRShuffleNetV2Plus, ShuffleNetV2,
                           ShuffleNetV2Plus, convert_official_shufflenetv2,
                           convert_official_shufflenetv2plus,
                           convert_torchvision_shufflenetv2)

__all__ = [
    'CondenseNet', 'CondenseNetV2', 'ShuffleNetV2', 'ShuffleNetV2Plus', 'SFRShuffleNetV2',
    'SFRShuffleNetV2Plus', 'convert_official_shufflenetv2',
    'convert_official_shufflenetv2plus', 'convert_torchvision_shufflenetv2'
]
