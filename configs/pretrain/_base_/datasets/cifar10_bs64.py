# CIFAR-10, batch 64, standard crop + flip (CondenseNet's CIFAR protocol).
_base_ = ['mmpretrain::_base_/datasets/cifar10_bs16.py']
train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader
