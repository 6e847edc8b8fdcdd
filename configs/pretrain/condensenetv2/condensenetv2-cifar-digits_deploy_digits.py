# The digits CondenseNetV2 in its deploy (condensed) form, for checkpoints converted by
# tools/convert_to_deploy.py from condensenetv2-cifar-digits_1xb64_digits.py.
_base_ = ['./condensenetv2-cifar-digits_1xb64_digits.py']
model = dict(backbone=dict(deploy=True))
custom_hooks = []
