"""mmengine checkpoints load under torch>=2.6's weights_only default; pickles don't.

(The crafted checkpoints of tests/test_reliability/test_checkpoint_security.py go
further: through every tool and through mmengine's loaders.)
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from torch import nn
from torch.utils.data import TensorDataset


class TinyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x, y, mode='loss'):
        out = self.fc(x)
        return dict(loss=((out - y) ** 2).mean()) if mode == 'loss' else out


def _collate(batch):
    return dict(x=torch.stack([b[0] for b in batch]), y=torch.stack([b[1] for b in batch]))


WEIGHTS_ONLY_DEFAULT = pytest.mark.skipif(
    tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]) < (2, 6),
    reason='torch < 2.6 does not load with weights_only by default')


def _runner(work_dir, max_epochs=2, crash_epoch=None, empty_state=False, **kwargs):
    g = torch.Generator().manual_seed(0)
    dataset = TensorDataset(torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g))
    custom_hooks = [dict(type='mmsfr_test_empty_state')] if empty_state else []
    if crash_epoch is not None:
        custom_hooks.append(dict(type='mmsfr_test_crash', epoch=crash_epoch))
    torch.manual_seed(0)  # the model is built before the runner seeds
    return Runner(
        model=TinyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=dataset, batch_size=4, collate_fn=_collate,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
                         dict(type='MultiStepLR', milestones=[1], by_epoch=True)],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=custom_hooks, randomness=dict(seed=0), **kwargs)


@pytest.fixture(scope='module', autouse=True)
def crash_hook():
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    class CrashHook(Hook):
        def __init__(self, epoch):
            self.epoch = epoch

        def before_train_epoch(self, runner):
            if runner.epoch == self.epoch:
                raise KeyboardInterrupt('simulated crash')

    class EmptyStateHook(Hook):
        """Puts an empty numpy array in the message hub's saved state."""

        def after_train_epoch(self, runner):
            runner.message_hub.update_info('empty_array', np.zeros(0))

    HOOKS.register_module('mmsfr_test_crash', module=CrashHook, force=True)
    HOOKS.register_module('mmsfr_test_empty_state', module=EmptyStateHook, force=True)
    yield


def _weights(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_resume_is_bit_identical(tmp_path):
    full = _runner(tmp_path / 'full')
    full.train()
    expected = _weights(full)

    crashed = _runner(tmp_path / 'crash', crash_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    assert (tmp_path / 'crash' / 'epoch_1.pth').exists()
    assert not (tmp_path / 'crash' / 'epoch_2.pth').exists()

    resumed = _runner(tmp_path / 'crash', resume=True)
    resumed.train()
    assert resumed.epoch == 2
    got = _weights(resumed)
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_load_from_and_plain_torch_load(tmp_path):
    first = _runner(tmp_path / 'a', max_epochs=1)
    first.train()
    ckpt = tmp_path / 'a' / 'epoch_1.pth'
    raw = torch.load(ckpt)  # weights_only=True by default since torch 2.6
    assert raw['meta']['epoch'] == 1 and 'message_hub' in raw

    second = _runner(tmp_path / 'b', max_epochs=1, load_from=str(ckpt))
    second.load_or_resume()
    for key, value in _weights(first).items():
        assert torch.equal(second.model.state_dict()[key], value), key


def test_checkpoint_with_empty_numpy_array_loads_and_resumes(tmp_path):
    """An empty array pickles its data as ``builtins.bytes()``: allowed, without args only."""
    first = _runner(tmp_path / 'a', max_epochs=1, empty_state=True)
    first.train()
    ckpt = tmp_path / 'a' / 'epoch_1.pth'
    raw = torch.load(ckpt)  # weights_only=True by default since torch 2.6
    hub = raw['message_hub']
    assert hub['runtime_info']['empty_array'].shape == (0, )
    load_checkpoint(TinyModel(), str(ckpt))
    resumed = _runner(tmp_path / 'a', max_epochs=2, resume=True)
    resumed.train()
    assert resumed.epoch == 2


@WEIGHTS_ONLY_DEFAULT
def test_without_mmsfr_mmengine_checkpoints_are_refused(tmp_path):
    """The allow-list is what makes them load: a fresh interpreter without it fails."""
    first = _runner(tmp_path / 'a', max_epochs=1)
    first.train()
    code = ('import sys, torch\n'
            'try:\n    torch.load(sys.argv[1])\nexcept Exception as e:\n'
            '    print(type(e).__name__); sys.exit(0)\nsys.exit(1)\n')
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'a' / 'epoch_1.pth')],
                         capture_output=True, text=True)
    assert out.returncode == 0 and 'UnpicklingError' in out.stdout


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@WEIGHTS_ONLY_DEFAULT
def test_pickled_callable_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'fc.0.weight': torch.zeros(8, 4)}, 'meta': _Evil(marker)}, path)
    with pytest.raises(Exception, match='(?i)weights only load failed|unsupported global'):
        load_checkpoint(TinyModel(), str(path))
    assert not marker.exists()
