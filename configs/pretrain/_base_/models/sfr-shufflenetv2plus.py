# SFR-ShuffleNetV2+ classifier (CondenseNetV2 supplement Tables 3-4; a reconstruction,
# see docs/sfr_shufflenet.md): ShuffleNetV2+ with a 3x3 sparse feature reactivation in
# every stride-1 unit, S = G = c/2 per stage; same tail as ShuffleNetV2+.
_base_ = ['./shufflenetv2plus.py']

model = dict(backbone=dict(type='SFRShuffleNetV2Plus', arch='small', deploy=False))
