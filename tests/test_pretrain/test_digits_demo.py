"""The real-data pretraining demo end to end: scikit-learn's handwritten digits as an
ImageNet-style folder dataset, CondenseNetV2 trained with the condensation schedule
through tools/train.py, deploy conversion, and identical accuracy of both forms.

Subprocesses run with ``OMP_NUM_THREADS=1``: on a busy 2-core machine two OpenMP
threads per process slow these small convolutions down several times.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from PIL import Image

from conftest import REPO
from mmsfr.models.layers import condensing_layers
from mmsfr.utils.config_check import check_num_classes

CONFIGS = REPO / 'configs/pretrain/condensenetv2'
TRAIN_CFG = CONFIGS / 'condensenetv2-cifar-digits_1xb64_digits.py'
DEPLOY_CFG = CONFIGS / 'condensenetv2-cifar-digits_deploy_digits.py'
MAKE = 'tools/misc/make_digits_imagenet.py'
ENV = dict(os.environ, OMP_NUM_THREADS='1')


def run(*args, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def write_cfg(path: Path, base: Path, data_root: Path, extra: str = '') -> Path:
    """A config inheriting ``base`` that reads the digits from ``data_root``."""
    root = data_root.as_posix()
    path.write_text(
        f"_base_ = ['{base.as_posix()}']\n"
        f"train_dataloader = dict(dataset=dict(data_root='{root}'))\n"
        f"val_dataloader = dict(dataset=dict(data_root='{root}'))\n"
        f"test_dataloader = dict(dataset=dict(data_root='{root}'))\n" + extra)
    return path


def errors(stderr: str) -> list[str]:
    """The tool's own error lines (library warnings may precede them)."""
    return [line for line in stderr.splitlines() if line.startswith('error: ')]


def top1(text: str) -> float:
    found = re.findall(r'accuracy/top1: ([0-9.]+)', text)
    assert found, text[-3000:]
    return float(found[-1])


@pytest.fixture(scope='module')
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('digits')
    out = run(MAKE, '--out', root)
    assert out.returncode == 0, out.stderr
    return root


@pytest.fixture(scope='module')
def trained(tmp_path_factory, digits) -> dict:
    tmp = tmp_path_factory.mktemp('train')
    cfg = write_cfg(tmp / 'train_cfg.py', TRAIN_CFG, digits)
    work = tmp / 'work'
    out = run('tools/train.py', cfg, '--work-dir', work)
    assert out.returncode == 0, out.stderr[-3000:]
    max_epochs = Config.fromfile(TRAIN_CFG).train_cfg.max_epochs
    ckpt = work / f'epoch_{max_epochs}.pth'
    assert ckpt.exists(), sorted(p.name for p in work.iterdir())
    return dict(tmp=tmp, cfg=cfg, work=work, ckpt=ckpt, log=out.stdout + out.stderr)


# ----------------------------------------------------------------------- dataset
def test_dataset_is_a_stratified_folder_dataset(digits):
    counts = {}
    for split in ('train', 'val'):
        classes = sorted(p.name for p in (digits / split).iterdir())
        assert classes == [str(c) for c in range(10)]
        counts[split] = {c: len(list((digits / split / c).glob('*.png'))) for c in classes}
    assert sum(counts['train'].values()) + sum(counts['val'].values()) == 1797
    for c in counts['val']:  # 20% of every class, rounded
        total = counts['train'][c] + counts['val'][c]
        assert counts['val'][c] == round(total * 0.2)
    img = Image.open(next((digits / 'val' / '7').glob('*.png')))
    assert img.mode == 'RGB' and img.size == (16, 16)


def test_dataset_tool_rejects_bad_values(tmp_path):
    for args, message in ((('--val-fraction', '1'), '--val-fraction must be in (0, 1)'),
                          (('--size', '4'), '--size must be in 8..512'),
                          (('--seed', '-1'), '--seed must be >= 0')):
        out = run(MAKE, '--out', tmp_path / 'd', *args)
        assert out.returncode == 2 and message in out.stderr, out.stderr
    assert not (tmp_path / 'd').exists()


# ----------------------------------------------------------------------- training
def test_training_ends_fully_condensed(trained):
    cfg = Config.fromfile(TRAIN_CFG)
    from mmsfr.models import CondenseNetV2
    layers = dict(condensing_layers(CondenseNetV2(**{k: v for k, v in cfg.model.backbone.items()
                                                     if k != 'type'})))
    state = torch.load(trained['ckpt'], map_location='cpu', weights_only=False)['state_dict']
    masks = {k[len('backbone.'):-len('._mask')]: v for k, v in state.items()
             if k.endswith('._mask')}
    assert masks.keys() == layers.keys() and len(masks) == 24  # 12 LGC + 12 SFR
    for name, mask in masks.items():
        factor = layers[name].factor
        assert factor == 4
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert int(mask.sum()) * factor == mask.numel(), name  # density exactly 1/C
        assert int(state[f'backbone.{name}._stage']) == factor - 1, name
        assert int(state[f'backbone.{name}._count']) == (factor - 1) * layers[name]._slice
    # Condensation (3 stages) finished at half of training, iteration-based.
    iters = [int(i) for i in re.findall(r'layer-stages pruned at iter (\d+)', trained['log'])]
    max_iters = int(re.findall(r'Epoch\(train\)\s+\[\d+\]\[\d+/(\d+)\]', trained['log'])[0]) \
        * cfg.train_cfg.max_epochs
    assert len(iters) == 3 and iters[-1] <= max_iters // 2 + 1, iters


def test_deploy_conversion_keeps_accuracy(trained, digits):
    tmp = trained['tmp']
    deploy_ckpt = tmp / 'deploy.pth'
    out = run('tools/convert_to_deploy.py', trained['cfg'], trained['ckpt'], deploy_ckpt)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run('tools/test.py', trained['cfg'], trained['ckpt'], '--work-dir', tmp / 'test_train')
    assert out.returncode == 0, out.stderr[-3000:]
    train_top1 = top1(out.stdout + out.stderr)
    deploy_cfg = write_cfg(tmp / 'deploy_cfg.py', DEPLOY_CFG, digits)
    out = run('tools/test.py', deploy_cfg, deploy_ckpt, '--work-dir', tmp / 'test_deploy')
    assert out.returncode == 0, out.stderr[-3000:]
    deploy_top1 = top1(out.stdout + out.stderr)
    print(f'\nheld-out top-1: train-time {train_top1}, deploy {deploy_top1}')
    assert deploy_top1 == train_top1
    assert train_top1 >= 90.0


# ----------------------------------------------------------------------- bad input
def test_missing_dataset_folder_is_one_clear_error(tmp_path):
    missing = tmp_path / 'no_digits_here'
    cfg = write_cfg(tmp_path / 'cfg.py', TRAIN_CFG, missing)
    out = run('tools/train.py', cfg, '--work-dir', tmp_path / 'w')
    assert out.returncode == 1
    assert errors(out.stderr) == [f'error: train dataset: data_root {missing.as_posix()} '
                                  'does not exist']
    assert 'Traceback' not in out.stderr


def test_class_count_differing_from_head_is_caught(tmp_path, digits):
    cfg = write_cfg(tmp_path / 'cfg.py', TRAIN_CFG, digits)
    out = run('tools/train.py', cfg, '--work-dir', tmp_path / 'w',
              '--cfg-options', 'model.head.num_classes=9')
    assert out.returncode == 1
    lines = errors(out.stderr)
    assert len(lines) == 1 and lines[0].startswith(
        f'error: train dataset has 10 classes (class folders in {(digits / "train").as_posix()}'
        ') but model.head.num_classes is 9'), out.stderr
    assert 'Traceback' not in out.stderr


def test_class_count_check_reads_metainfo_and_skips_annotation_files(tmp_path):
    head = dict(head=dict(num_classes=10))
    with pytest.raises(ValueError, match='has 3 classes .metainfo.classes. but '
                                         'model.head.num_classes is 10'):
        check_num_classes(dict(type='CustomDataset', metainfo=dict(classes=('a', 'b', 'c'))),
                          head, 'val')
    (tmp_path / 'train' / 'only_class').mkdir(parents=True)
    folder = dict(type='mmpretrain.CustomDataset', data_root=str(tmp_path), data_prefix='train')
    with pytest.raises(ValueError, match='has 1 classes'):
        check_num_classes(folder, head, 'train')
    check_num_classes(dict(folder, ann_file='meta/train.txt'), head, 'train')  # labels in file
    check_num_classes(dict(folder, type='CIFAR10'), head, 'train')  # not a folder dataset
    check_num_classes(folder, dict(head=dict(type='LinearClsHead')), 'train')  # no count
