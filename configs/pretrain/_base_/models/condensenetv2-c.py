# CondenseNetV2-C classifier (paper Table 2): backbone, its pretrained last-block
# norm (BN + ReLU), global pooling, SE(16) -> fc (1024) -> hard-swish -> classifier.
model = dict(
    type='ImageClassifier',
    backbone=dict(type='CondenseNetV2', arch='c', out_indices=(4, ), out_norm='last'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='CondenseNetV2ClsHead',
        num_classes=1000,
        in_channels=2064,
        mid_channels=1024,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)))
