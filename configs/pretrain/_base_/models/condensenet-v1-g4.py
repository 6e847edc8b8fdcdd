# CondenseNet v1 ImageNet model, G = C = 4 (4-6-8-10-8 / 8-16-32-64-128): the
# CondenseNet-C classifier with 4 groups.
_base_ = ['./condensenet-c.py']
model = dict(backbone=dict(arch='v1-g4'))
