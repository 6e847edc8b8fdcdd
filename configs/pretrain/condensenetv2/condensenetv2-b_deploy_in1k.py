# condensenetv2 b, deploy (condensed) form: evaluate converted weights, e.g.
#   python tools/test.py configs/pretrain/condensenetv2/condensenetv2-b_deploy_in1k.py \
#       checkpoints/condensenetv2_b_deploy_in1k.pth
_base_ = ['./condensenetv2-b_8xb128_in1k.py']

model = dict(backbone=dict(deploy=True))
custom_hooks = []
