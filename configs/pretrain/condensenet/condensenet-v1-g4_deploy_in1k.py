# condensenet v1-g4, deploy (condensed) form: evaluate converted weights, e.g.
#   python tools/test.py configs/pretrain/condensenet/condensenet-v1-g4_deploy_in1k.py \
#       checkpoints/condensenet_v1_g4_deploy_in1k.pth
_base_ = ['./condensenet-v1-g4_8xb128_in1k.py']

model = dict(backbone=dict(deploy=True), head=dict(deploy=True))
custom_hooks = []
