# A small CIFAR-style CondenseNetV2 learning its sparse connections on real handwritten
# digits (tools/misc/make_digits_imagenet.py) in about two minutes on 2 CPU cores: the
# whole condensation schedule (3 pruning stages of every LGC and SFR, C = S = G = 4) is
# compressed into the first half of a 12-epoch run (docs/pretraining.md).
_base_ = [
    '../_base_/datasets/digits_bs64.py',
    '../_base_/default_runtime.py',
]
# 3 dense blocks of 4 layers at 16/8/4 pixels, growth 8-16-32 (cifar-110 with 4 instead
# of 10 layers per block): 16 -> 48 -> 112 -> 240 channels.
arch = dict(depths=(4, 4, 4), growths=(8, 16, 32), groups=4, condense_factor=4,
            sparse_factor=4, hs_from=None, se_from=None, stem_stride=1)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='CondenseNetV2', arch=arch, out_indices=(2, ), out_norm='last'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=240,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

max_epochs = 12
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=0.0, by_epoch=True,
         convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=3)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64)

# Progress is iteration-based (runner.iter / max_iters): condensation ends at half of
# training, leaving 6 epochs to fine-tune the condensed network.
custom_hooks = [dict(type='CondensationHook', end=0.5)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
