# CondenseNetV2-146 on CIFAR-10 with learned condensation (train-time form).
_base_ = [
    '../_base_/models/condensenetv2-cifar146.py',
    '../_base_/datasets/cifar10_bs64.py',
    '../_base_/schedules/cifar_bs64_cosine_300e.py',
    '../_base_/default_runtime.py',
]
custom_hooks = [dict(type='CondensationHook', end=0.5)]
