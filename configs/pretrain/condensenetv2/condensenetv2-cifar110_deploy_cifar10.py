# CondenseNetV2-110 on CIFAR-10, deploy (condensed) form for converted weights.
_base_ = ['./condensenetv2-cifar110_1xb64_cifar10.py']
model = dict(backbone=dict(deploy=True))
custom_hooks = []
