# Faster R-CNN with a CondenseNetV2-A backbone (deploy form, from scratch) sized for
# 2 CPU cores, on the generated shapes dataset (tools/misc/make_demo_coco.py):
#   python tools/train.py configs/demo/faster_rcnn_condensenetv2_demo.py
_base_ = ['mmdet::_base_/models/faster-rcnn_r50_fpn.py', './_base_/shapes_coco.py']

model = dict(
    backbone=dict(_delete_=True, type='CondenseNetV2', arch='a', deploy=True,
                  out_indices=(1, 2, 3, 4), out_norm='all', init_cfg=None),
    neck=dict(in_channels=[32, 96, 288, 800], out_channels=64, num_outs=5),
    rpn_head=dict(in_channels=64, feat_channels=64,
                  anchor_generator=dict(scales=[4], strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3)))
