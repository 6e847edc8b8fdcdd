# SFR-ShuffleNetV2 classifier (CondenseNetV2 supplement Tables 1-2; a reconstruction,
# see docs/sfr_shufflenet.md): ShuffleNetV2 (megvii layout) with a 3x3 sparse feature
# reactivation in every stride-1 unit, S = G = c/2 per stage; same tail as ShuffleNetV2.
_base_ = ['./shufflenetv2.py']

model = dict(backbone=dict(type='SFRShuffleNetV2', _delete_=True, arch='1.0x',
                           layout='megvii', out_indices=(4, ), deploy=False))
