"""Released-weight converters: key maps from the authors' and torchvision's
checkpoints to mmsfr's, and the registry of released models
(``tools/model_converters/official_to_mmsfr.py``).

Example:
    >>> from mmsfr.converters import OFFICIAL_MODELS
    >>> OFFICIAL_MODELS['condensenetv2_a'].deploy_config
    'configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py'
"""
from .registry import OFFICIAL_MODELS, OfficialModel

__all__ = ['OFFICIAL_MODELS', 'OfficialModel']
