# condensenet b, deploy (condensed) form: evaluate converted weights, e.g.
#   python tools/test.py configs/pretrain/condensenet/condensenet-b_deploy_in1k.py \
#       checkpoints/condensenet_b_deploy_in1k.pth
_base_ = ['./condensenet-b_8xb128_in1k.py']

model = dict(backbone=dict(deploy=True), head=dict(deploy=True))
custom_hooks = []
