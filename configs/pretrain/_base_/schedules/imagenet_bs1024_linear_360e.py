# ShuffleNetV2+ recipe (megvii ShuffleNet-Series): as the ShuffleNetV2 one (SGD 0.9,
# lr 0.5 for batch 1024, linear decay to 0, wd 4e-5 without decay on norms and
# biases) but 360 epochs; the label smoothing 0.1 is in the model's head loss.
_base_ = ['./imagenet_bs1024_linear_240e.py']

param_scheduler = [
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=True, begin=0, end=360,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=360)
