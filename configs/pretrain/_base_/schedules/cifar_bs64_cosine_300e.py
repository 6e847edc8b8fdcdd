# CondenseNet CIFAR schedule: SGD nesterov 0.9, lr 0.1, cosine over 300 epochs, wd 1e-4.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=300, eta_min=0.0, by_epoch=True,
         convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64)
