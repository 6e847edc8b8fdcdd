"""Layers shared by every mmsfr model (one implementation of each idea)."""
from .condense import (CondensingConv, CondensingLinear, LearnedGroupConv, PreActConv,
                       SparseFeatureReactivation, build_act, condensation_stage,
                       condense_model, condensing_layers, convert_to_deploy)
from .grouped_conv import (avg_pool2x2, grouped_conv2d, grouped_pointwise,
                           inference_fast_path)
from .se import SqueezeExcitation
from .shuffle import channel_shuffle

__all__ = [
    'CondensingConv', 'CondensingLinear', 'LearnedGroupConv', 'PreActConv', 'SparseFeatureReactivation',
    'SqueezeExcitation', 'build_act', 'channel_shuffle', 'condensation_stage',
    'condense_model', 'condensing_layers', 'convert_to_deploy', 'grouped_conv2d',
    'grouped_pointwise', 'avg_pool2x2', 'inference_fast_path'
]
