# RetinaNet with a CondenseNetV2-A backbone (deploy form, from scratch) sized for
# 2 CPU cores, on the generated shapes dataset (tools/misc/make_demo_coco.py).
# `make demo` trains it with tools/train.py and evaluates with tools/test.py.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', './_base_/shapes_coco.py']

model = dict(
    # Strides 8/16/32 only (as RetinaNet uses them): no unused output norm.
    backbone=dict(_delete_=True, type='CondenseNetV2', arch='a', deploy=True,
                  out_indices=(2, 3, 4), out_norm='all', init_cfg=None),
    # in_channels = CondenseNetV2.feature_channels('a', (2, 3, 4)). Objects are 16-42
    # px: the head starts at stride 8 with anchors of 16-25 px (octave_base_scale=2).
    neck=dict(in_channels=[96, 288, 800], out_channels=64, start_level=0,
              add_extra_convs='on_output', num_outs=5),
    bbox_head=dict(num_classes=3, in_channels=64, feat_channels=64, stacked_convs=2,
                   anchor_generator=dict(octave_base_scale=2)))

# Test-time augmentation for `tools/test.py ... --tta` (mmdet's pattern, as in
# mmdet::retinanet/retinanet_tta.py): each test image at three scales, each also
# flipped; DetTTAModel merges the six predictions with NMS.
tta_model = dict(
    type='DetTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
tta_pipeline = [
    dict(type='LoadImageOrSkip', skip=False),
    dict(type='TestTimeAug',
         transforms=[
             [dict(type='Resize', scale=(128, 128), keep_ratio=True),
              dict(type='Resize', scale=(96, 96), keep_ratio=True),
              dict(type='Resize', scale=(160, 160), keep_ratio=True)],
             [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
             [dict(type='LoadAnnotations', with_bbox=True)],
             [dict(type='PackDetInputs',
                   meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                              'scale_factor', 'flip', 'flip_direction'))],
         ]),
]
