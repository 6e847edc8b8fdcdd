# megvii ShuffleNetV2+ classifier: backbone up to conv_last (1x1 to 1280, BN, HS),
# global pooling, SE -> Linear(1280, 1280) -> HS -> dropout 0.2 -> Linear (no biases).
# Trained with label smoothing 0.1 (megvii recipe).
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ShuffleNetV2Plus', arch='small', out_indices=(4, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='ShuffleNetV2PlusClsHead',
        num_classes=1000,
        in_channels=1280,
        mid_channels=1280,
        dropout=0.2,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)))
