# CondenseNetV2-110 for CIFAR (paper Table 6): 3 blocks, C = S = G = 4, BN + ReLU,
# pooling, one Linear (see docs/condensenetv2.md for the depth reading).
model = dict(
    type='ImageClassifier',
    backbone=dict(type='CondenseNetV2', arch='cifar-110', out_indices=(2, ), out_norm='last'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=576,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
