"""Layers shared by every mmsfr model (one implementation of each idea)."""
from .condense import (CondensingConv, CondensingLinear, LearnedGroupConv, PreActConv,
                       SparseFeatureReactivation, build_act, condensation_stage,
                       condense_model, condensing_layers, convert_to_deploy)
from .se import SqueezeExcitation
from .shuffle import channel_shuffle

__all__ = [
    'CondensingConv', 'CondensingLinear', 'LearnedGroupConv', 'PreActConv', 'SparseFeatureReactivation',
    'SqueezeExcitation', 'build_act', 'channel_shuffle', 'condensation_stage',
    'condense_model', 'condensing_layers', 'convert_to_deploy'
]
