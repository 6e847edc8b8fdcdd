# condensenet c, deploy (condensed) form: evaluate converted weights, e.g.
#   python tools/test.py configs/pretrain/condensenet/condensenet-c_deploy_in1k.py \
#       checkpoints/condensenet_c_deploy_in1k.pth
_base_ = ['./condensenet-c_8xb128_in1k.py']

model = dict(backbone=dict(deploy=True), head=dict(deploy=True))
custom_hooks = []
