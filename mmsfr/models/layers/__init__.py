"""Layers shared by every mmsfr model (one implementation of each idea)."""
from .condense import (CondensingConv, CondensingLinear, LearnedGroupConv, PreActConv,
                       SparseFeatureReactivation, build_act, condensation_stage,
                       condense_model, condensing_layers, convert_to_deploy)
from .fuse import fold_batchnorm, fuse_conv_module
from .grouped_conv import grouped_conv2d, grouped_pointwise, inference_fast_path
from .native import native_available, native_enabled, native_kernels
from .pooling import FastMaxPool2d, avg_pool2x2, max_pool3x3s2
from .se import SqueezeExcitation
from .shuffle import channel_shuffle

__all__ = [
    'CondensingConv', 'CondensingLinear', 'FastMaxPool2d', 'LearnedGroupConv', 'PreActConv',
    'SparseFeatureReactivation', 'SqueezeExcitation', 'avg_pool2x2', 'build_act',
    'channel_shuffle', 'condensation_stage', 'condense_model', 'condensing_layers',
    'convert_to_deploy', 'fold_batchnorm', 'fuse_conv_module', 'grouped_conv2d',
    'grouped_pointwise', 'inference_fast_path', 'max_pool3x3s2', 'native_available',
    'native_enabled', 'native_kernels'
]
