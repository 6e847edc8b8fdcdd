# ShuffleNetV2 recipe (paper sec. 5 / megvii ShuffleNet-Series training scripts): SGD
# momentum 0.9, lr 0.5 for batch 1024, per-iteration linear decay to 0, no warm-up,
# weight decay 4e-5 on conv / linear weights only (megvii exempts 1-D parameters:
# norms and biases), 240 epochs (megvii: 300k iterations at batch 1024).
# `--auto-scale-lr` rescales lr to the actual batch size.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.5, momentum=0.9, weight_decay=4e-5),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    # PolyLR with power 1 = linear decay to eta_min, stepped every iteration.
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=True, begin=0, end=240,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=240, val_interval=5)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)
