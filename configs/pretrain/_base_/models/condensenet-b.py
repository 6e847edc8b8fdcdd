# CondenseNet-B classifier: backbone + last-block norm, pooling, one Linear that the
# deploy form condenses to its strongest 50% inputs (as the reference CondenseNet).
model = dict(
    type='ImageClassifier',
    backbone=dict(type='CondenseNet', arch='b', out_indices=(4, ), out_norm='last'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='CondenseNetClsHead',
        num_classes=1000,
        in_channels=1176,
        keep_ratio=0.5,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)))
