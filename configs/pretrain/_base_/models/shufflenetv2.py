# ShuffleNetV2 classifier in megvii's layout (the authors' released weights): backbone
# up to conv_last (1x1 to 1024, BN, ReLU), global pooling, Linear without bias.
# In the mmpretrain scope the plain name `ShuffleNetV2` is mmpretrain's own backbone,
# so mmsfr's is referenced by its import path.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='mmsfr.models.ShuffleNetV2', arch='1.0x', layout='megvii',
                  out_indices=(4, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='ShuffleNetV2ClsHead',
        num_classes=1000,
        in_channels=1024,
        bias=False,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
