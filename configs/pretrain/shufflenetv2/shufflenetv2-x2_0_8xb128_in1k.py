# ShuffleNetV2 2.0x (megvii layout): ImageNet training with the ShuffleNetV2 recipe;
# also the config of megvii's released weights, converted with
#   python tools/model_converters/official_to_mmsfr.py --model shufflenetv2_x2_0 SRC DST
# Input: BGR, 0-255, no normalisation (see the dataset base).
_base_ = [
    '../_base_/models/shufflenetv2.py',
    '../_base_/datasets/imagenet_bs128_megvii.py',
    '../_base_/schedules/imagenet_bs1024_linear_240e.py',
    '../_base_/default_runtime.py',
]

# 2.0x: conv_last has 2048 channels and megvii's classifier has dropout 0.2.
model = dict(backbone=dict(arch='2.0x'), head=dict(in_channels=2048, dropout=0.2))
