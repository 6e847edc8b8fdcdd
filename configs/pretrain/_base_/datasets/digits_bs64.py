# scikit-learn's handwritten digits as an ImageNet-style folder dataset (10 classes,
# 1438 train / 359 val images, 8x8 upscaled to 16x16), written by
# `python tools/misc/make_digits_imagenet.py --out data/digits`. Batch 64, light shift
# augmentation, no flip (a mirrored digit is another symbol).
dataset_type = 'CustomDataset'
data_root = 'data/digits'
# Mean / std (0-255, every channel) of the train images that tool writes with its
# defaults (--size 16 --seed 0 --val-fraction 0.2); it prints them for other settings
# (another --size also needs RandomCrop's crop_size below).
data_preprocessor = dict(
    num_classes=10, mean=[77.911] * 3, std=[81.28] * 3, to_rgb=False)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=16, padding=1),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=64,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
