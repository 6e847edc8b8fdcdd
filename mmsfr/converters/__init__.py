"""Released-weight converters: key maps from the authors' and torchvision's
checkpoints to mmsfr's (:mod:`.condensenet`, :mod:`.shufflenetv2`), and the registry
of released models (:mod:`.registry`, used by
``tools/model_converters/official_to_mmsfr.py``).

Nothing here imports the models at import time (:mod:`mmsfr.models.backbones`
re-exports the converters under their former addresses).

Example:
    >>> from mmsfr.converters import OFFICIAL_MODELS
    >>> OFFICIAL_MODELS['condensenetv2_a'].deploy_config
    'configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py'
"""
from .condensenet import convert_official_condensenet
from .registry import OFFICIAL_MODELS, OfficialModel
from .shufflenetv2 import (convert_official_shufflenetv2, convert_official_shufflenetv2plus,
                           convert_torchvision_shufflenetv2)

__all__ = [
    'OFFICIAL_MODELS', 'OfficialModel', 'convert_official_condensenet',
    'convert_official_shufflenetv2', 'convert_official_shufflenetv2plus',
    'convert_torchvision_shufflenetv2'
]
