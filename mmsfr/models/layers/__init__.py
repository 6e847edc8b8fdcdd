"""Layers shared by every mmsfr model (one implementation of each idea).

* :mod:`.norm_act`: BatchNorm / activation helpers and the pre-activation conv;
* :mod:`.condense`: the condensing convolutions, LGC and SFR, and their schedule;
* :mod:`.se`, :mod:`.shuffle`, :mod:`.pooling`: squeeze-excite, channel shuffle, pooling;
* :mod:`.grouped_conv`: grouped convolutions as a CPU runs them fastest;
* :mod:`.fuse`: folding BatchNorms into convolutions (deploy forms);
* :mod:`.fast_path`: when inference kernels may replace the canonical ops;
* :mod:`.linear`: a fully connected layer streaming its weight at CPU inference;
* :mod:`.dense_plan`: what a deploy dense layer hands mmsfr's C++ operators.
"""
from ...ops import native_available, native_enabled, native_kernels
from ..deploy import convert_to_deploy
from .condense import (CondensingConv, CondensingLinear, LearnedGroupConv,
                       SparseFeatureReactivation, condensation_stage, condense_model,
                       condensing_layers)
from .fast_path import inference_fast_path
from .fuse import fold_batchnorm, fuse_conv_module
from .grouped_conv import grouped_conv2d, grouped_pointwise
from .linear import FastLinear
from .norm_act import PreActConv, build_act, build_norm
from .pooling import FastMaxPool2d, avg_pool2x2, max_pool3x3s2
from .se import SqueezeExcitation
from .shuffle import channel_shuffle

__all__ = [
    'CondensingConv', 'CondensingLinear', 'FastLinear', 'FastMaxPool2d', 'LearnedGroupConv',
    'PreActConv', 'SparseFeatureReactivation', 'SqueezeExcitation', 'avg_pool2x2', 'build_act',
    'build_norm', 'channel_shuffle', 'condensation_stage', 'condense_model',
    'condensing_layers', 'convert_to_deploy', 'fold_batchnorm', 'fuse_conv_module',
    'grouped_conv2d', 'grouped_pointwise', 'inference_fast_path', 'max_pool3x3s2',
    'native_available', 'native_enabled', 'native_kernels'
]
