# ShuffleNetV2 0.5x in torchvision's layout (contiguous split, channel shuffle after
# every unit, Linear with bias): the config of torchvision's shufflenet_v2_x0_5
# weights, converted with
#   python tools/model_converters/official_to_mmsfr.py \
#       --model torchvision_shufflenetv2_x0_5 SRC DST
# Unlike the megvii-layout configs, these weights expect RGB input normalised with
# the ImageNet mean/std, so the data preprocessor is overridden here.
_base_ = ['./shufflenetv2-x0_5_8xb128_in1k.py']

data_preprocessor = dict(
    mean=[123.675, 116.28, 103.53],  # RGB, ImageNet mean/std (torchvision convention)
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)
model = dict(backbone=dict(layout='torchvision'), head=dict(bias=True))
