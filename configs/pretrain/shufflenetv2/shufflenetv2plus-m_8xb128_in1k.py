# ShuffleNetV2+ medium (megvii): ImageNet training with the ShuffleNetV2+ recipe (360
# epochs, label smoothing 0.1); also the config of megvii's released weights, converted
# with  python tools/model_converters/official_to_mmsfr.py --model shufflenetv2plus_m SRC DST
# Input: BGR, 0-255, no normalisation (see the dataset base).
_base_ = [
    '../_base_/models/shufflenetv2plus.py',
    '../_base_/datasets/imagenet_bs128_megvii.py',
    '../_base_/schedules/imagenet_bs1024_linear_360e.py',
    '../_base_/default_runtime.py',
]

model = dict(backbone=dict(arch='medium'))
