# SFR-ShuffleNetV2 1.0x: ImageNet training (train-time form, masked SFR convs) with the
# ShuffleNetV2 recipe (240 epochs) plus learned condensation in the first half.
# Ends fully condensed; then: tools/convert_to_deploy.py <this config> <ckpt> <out>
# and evaluate <out> with sfr-shufflenetv2-x1_0_deploy_in1k.py.
# Input: BGR, 0-255, no normalisation (megvii convention, see the dataset base).
_base_ = [
    '../_base_/models/sfr-shufflenetv2.py',
    '../_base_/datasets/imagenet_bs128_megvii.py',
    '../_base_/schedules/imagenet_bs1024_linear_240e.py',
    '../_base_/default_runtime.py',
]

model = dict(backbone=dict(arch='1.0x'))
custom_hooks = [
    # Prunes the SFR masks over the first half of training (keeps EMA masks in sync).
    dict(type='CondensationHook', end=0.5),
    dict(type='EMAHook', momentum=0.0002, priority='ABOVE_NORMAL'),
]
