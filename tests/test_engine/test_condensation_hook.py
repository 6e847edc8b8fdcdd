"""CondensationHook on a real mmengine Runner: schedule, EMA masks, exact resume."""
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from mmpretrain.structures import DataSample
from torch.utils.data import Dataset

from mmsfr.models.layers import condensing_layers

ARCH = dict(depths=(1, 2), growths=(8, 8), groups=2, condense_factor=4, sparse_factor=4,
            hs_from=1, se_from=1, stem_stride=1)


class Blobs(Dataset):
    """Two classes of 16x16 images: bright top half vs bright bottom half."""

    def __init__(self, n=32):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        self.images = torch.randint(0, 60, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
        for i, y in enumerate(self.labels):
            rows = slice(0, 8) if y == 0 else slice(8, 16)
            self.images[i, :, rows] += 150

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return dict(inputs=self.images[i], data_samples=DataSample().set_gt_label(int(self.labels[i])))


class Crash(Hook):
    def __init__(self, epoch):
        self.epoch = epoch

    def before_train_epoch(self, runner):
        if runner.epoch == self.epoch:
            raise KeyboardInterrupt('simulated crash')


HOOKS.register_module('mmsfr_test_crash_epoch', module=Crash, force=True)


def make_runner(work_dir, ema=True, crash=None, resume=False):
    hooks = [dict(type='CondensationHook', end=0.5)]
    if ema:
        hooks.append(dict(type='EMAHook', momentum=0.1, update_buffers=True,
                          priority='ABOVE_NORMAL'))
    if crash is not None:
        hooks.append(dict(type='mmsfr_test_crash_epoch', epoch=crash))
    return Runner(
        model=dict(type='ImageClassifier',
                   data_preprocessor=dict(type='ClsDataPreprocessor', mean=[128] * 3,
                                          std=[64] * 3, num_classes=2),
                   backbone=dict(type='CondenseNetV2', arch=ARCH, out_indices=(1, )),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=2, in_channels=40)),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=Blobs(), batch_size=4, collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=4)),
        custom_hooks=hooks, randomness=dict(seed=0), default_scope='mmpretrain',
        resume=resume)


def _stages(model):
    return [layer.stage for _, layer in condensing_layers(model)]


def test_run_ends_condensed_and_ema_masks_are_copies(tmp_path):
    torch.manual_seed(0)
    runner = make_runner(tmp_path)
    runner.train()
    model = runner.model
    assert _stages(model) == [3] * len(condensing_layers(model))
    ema = [h for h in runner.hooks if type(h).__name__ == 'EMAHook'][0].ema_model.module
    for (name, live), (_, avg) in zip(condensing_layers(model), condensing_layers(ema)):
        assert torch.equal(live._mask, avg._mask), name  # copied, not averaged
        assert set(avg._mask.unique().tolist()) <= {0.0, 1.0}
        assert live._mask[:, :, 0, 0].mean().item() == pytest.approx(1 / 4)


def test_resume_mid_condensation_is_exact(tmp_path):
    torch.manual_seed(0)
    full = make_runner(tmp_path / 'full', ema=False)
    full.train()
    torch.manual_seed(0)
    crashed = make_runner(tmp_path / 'crash', ema=False, crash=1)
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    assert _stages(crashed.model)[0] == 2  # interrupted between condensation stages
    torch.manual_seed(0)
    resumed = make_runner(tmp_path / 'crash', ema=False, resume=True)
    resumed.train()
    expected = full.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_hook_rejects_bad_end():
    from mmsfr.engine import CondensationHook
    with pytest.raises(ValueError, match=r'end=0 must be in \(0, 1\]'):
        CondensationHook(end=0)
