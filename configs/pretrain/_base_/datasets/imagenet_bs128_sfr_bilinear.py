# As imagenet_bs128_sfr.py, evaluated with bilinear resize 256 + center crop 224 (how the
# released CondenseNetV2-C and the torchvision-style CondenseNet v1 weights were scored).
_base_ = ['./imagenet_bs128_sfr.py']
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
