# SFR-ShuffleNetV2+ small, deploy (condensed) form: each SFR is a depthwise 3x3 conv +
# index_add. Evaluate converted weights, e.g.
#   python tools/test.py configs/pretrain/shufflenetv2/sfr-shufflenetv2plus-s_deploy_in1k.py \
#       checkpoints/sfr-shufflenetv2plus-s_deploy_in1k.pth
_base_ = ['./sfr-shufflenetv2plus-s_8xb128_in1k.py']

model = dict(backbone=dict(deploy=True))
custom_hooks = []
