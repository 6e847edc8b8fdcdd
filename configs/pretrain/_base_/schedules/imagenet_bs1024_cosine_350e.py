# CondenseNetV2 recipe: SGD nesterov 0.9, lr 0.4 for batch 1024 (5 warm-up epochs from
# 0.1), per-iteration cosine to 0 over 350 epochs, wd 4e-5 without decay on norms and
# biases. `--auto-scale-lr` rescales lr to the actual batch size.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.4, momentum=0.9, nesterov=True, weight_decay=4e-5),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.25, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=345, eta_min=0.0, by_epoch=True, begin=5,
         end=350, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=350, val_interval=5)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)
