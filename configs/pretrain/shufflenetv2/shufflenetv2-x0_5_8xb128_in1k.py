# ShuffleNetV2 0.5x (megvii layout): ImageNet training with the ShuffleNetV2 recipe;
# also the config of megvii's released weights, converted with
#   python tools/model_converters/official_to_mmsfr.py --model shufflenetv2_x0_5 SRC DST
# Input: BGR, 0-255, no normalisation (see the dataset base).
_base_ = [
    '../_base_/models/shufflenetv2.py',
    '../_base_/datasets/imagenet_bs128_megvii.py',
    '../_base_/schedules/imagenet_bs1024_linear_240e.py',
    '../_base_/default_runtime.py',
]

model = dict(backbone=dict(arch='0.5x'))
