# RetinaNet + FPN with an ImageNet-pretrained ShuffleNetV2 1.5x backbone on COCO.
# Paper (CondenseNetV2, Table 7): 29.1 mAP on COCO minival.
# Protocol: train2017 / val2017, only the backbone replaced, mmdet's 1x schedule (12
# epochs SGD, steps 8/11, linear warm-up), Resize(1333, 800) keep-ratio.
# Train: python tools/train.py configs/retinanet_shufflenetv2_x1_5.py  (8 GPUs: bash tools/dist_train.sh ... 8)
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    '_base_/backbones/shufflenetv2_x1_5.py',
]
model = dict(
    data_preprocessor={{_base_.mmsfr_data_preprocessor}},
    backbone={{_base_.mmsfr_backbone}},
    neck=dict(in_channels={{_base_.mmsfr_in_channels}}))
