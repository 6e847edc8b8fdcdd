# ImageNet as megvii's ShuffleNet-Series scripts feed it: train with RandomResizedCrop
# 224 + ColorJitter(0.4, 0.4, 0.4) + horizontal flip; evaluate with an OpenCV bilinear
# resize of the short side to 256 + center crop 224.
# Input convention of the megvii-layout models (and their released weights): BGR
# channel order, pixel values 0-255, NO mean/std normalisation. LoadImageFromFile
# decodes to BGR, so the preprocessor keeps the order (to_rgb=False) and leaves the
# values as they are (mean 0, std 1).
_base_ = ['mmpretrain::_base_/datasets/imagenet_bs32.py']

data_preprocessor = dict(
    num_classes=1000,
    mean=[0.0, 0.0, 0.0],  # BGR, 0-255, no normalisation (megvii convention)
    std=[1.0, 1.0, 1.0],
    to_rgb=False,
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bilinear'),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='cv2', interpolation='bilinear'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
