"""tools/train.py and tools/test.py end to end on the generated shapes dataset."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

DEMO = REPO / 'configs/demo/retinanet_condensenetv2_demo.py'


def run(*args, timeout=600, env=None):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes')
    out = run('tools/misc/make_demo_coco.py', '--out', root, '--train', 48, '--val', 16,
              '--size', 96, '--seed', 1)
    assert out.returncode == 0, out.stderr
    return root


def write_cfg(path, data_root, epochs=3, train_dataset='', model='', val_root=None):
    """A demo config on ``data_root``; ``train_dataset`` is python text added to the
    train dataset dict, ``model`` a model override."""
    val_root = val_root or data_root
    path.write_text(
        f"_base_ = ['{DEMO.as_posix()}']\n"
        f"train_dataloader = dict(num_workers=0, persistent_workers=False, "
        f"dataset=dict(data_root='{data_root.as_posix()}/', {train_dataset}))\n"
        f"val_dataloader = dict(num_workers=0, persistent_workers=False, "
        f"dataset=dict(data_root='{val_root.as_posix()}/'))\n"
        f"test_dataloader = val_dataloader\n"
        f"val_evaluator = dict(ann_file='{val_root.as_posix()}/annotations/instances_val.json')\n"
        f"test_evaluator = val_evaluator\n"
        f"train_cfg = dict(max_epochs={epochs}, val_interval={epochs})\n"
        f"randomness = dict(seed=0)\n"
        f"default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, "
        f"max_keep_ckpts=5))\n" + (f'model = {model}\n' if model else ''))
    return path


def losses(log: str) -> list[float]:
    return [float(m) for m in re.findall(r' loss: ([0-9.]+)', log)]


def test_train_then_test_learns_and_reports_coco(tmp_path, shapes):
    cfg = write_cfg(tmp_path / 'cfg.py', shapes, epochs=3)
    work = tmp_path / 'work'
    out = run('tools/train.py', cfg, '--work-dir', work)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = losses(out.stdout + out.stderr)
    assert len(seen) >= 12
    assert sum(seen[-4:]) / 4 < sum(seen[:4]) / 4  # loss falls
    ckpt = work / 'epoch_3.pth'
    assert ckpt.exists()
    # A 3-epoch model scores low: keep every box so COCO has something to score.
    out = run('tools/test.py', cfg, ckpt, '--work-dir', work, '--out', tmp_path / 'preds.pkl',
              '--show-dir', 'vis', '--cfg-options', 'model.test_cfg.score_thr=0.0')
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert 'coco/bbox_mAP' in text and 'Average Precision' in text
    assert (tmp_path / 'preds.pkl').stat().st_size > 0
    assert list(work.glob('*/vis/*.png'))


def test_resume_continues_from_saved_epoch(tmp_path, shapes):
    work = tmp_path / 'work'
    first = write_cfg(tmp_path / 'first.py', shapes, epochs=1)
    assert run('tools/train.py', first, '--work-dir', work).returncode == 0
    second = write_cfg(tmp_path / 'second.py', shapes, epochs=2)
    out = run('tools/train.py', second, '--work-dir', work, '--resume')
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert 'resumed epoch: 1' in text
    assert 'Epoch(train) [1]' not in text and 'Epoch(train) [2]' in text
    assert (work / 'epoch_2.pth').exists()


def test_two_process_distributed_training_on_cpu(tmp_path, shapes):
    cfg = write_cfg(tmp_path / 'cfg.py', shapes, epochs=1)
    work = tmp_path / 'work'
    env = dict(os.environ, OMP_NUM_THREADS='1', MASTER_PORT='29517')
    out = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         '--master_port=29517', 'tools/train.py', str(cfg), '--work-dir', str(work),
         '--launcher', 'pytorch'], cwd=REPO, capture_output=True, text=True, timeout=600,
        env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert 'Distributed training: True' in text
    assert 'GPU number: 2' in text  # mmengine's name for the world size
    assert (work / 'epoch_1.pth').exists()


# ----------------------------------------------------------------------- bad input
def test_missing_annotation_file_is_named(tmp_path, shapes):
    cfg = write_cfg(tmp_path / 'cfg.py', shapes, train_dataset="ann_file='annotations/nope.json'")
    out = run('tools/train.py', cfg, '--work-dir', tmp_path / 'w')
    assert out.returncode == 1
    assert f"annotation file {shapes.as_posix()}/annotations/nope.json does not exist" in out.stderr


def test_missing_image_folder_and_root_are_named(tmp_path, shapes):
    cfg = write_cfg(tmp_path / 'cfg.py', tmp_path / 'no_such_root')
    out = run('tools/train.py', cfg, '--work-dir', tmp_path / 'w')
    assert out.returncode == 1 and 'no_such_root' in out.stderr and 'does not exist' in out.stderr


def test_empty_annotation_file(tmp_path, shapes):
    empty = tmp_path / 'empty.json'
    empty.write_text(json.dumps(dict(images=[], annotations=[], categories=[])))
    cfg = write_cfg(tmp_path / 'cfg.py', shapes, train_dataset=f"ann_file='{empty.as_posix()}'")
    out = run('tools/train.py', cfg, '--work-dir', tmp_path / 'w')
    assert out.returncode == 1 and f'{empty.as_posix()} lists no images' in out.stderr


def test_neck_channels_mismatch_caught_before_training(tmp_path, shapes):
    cfg = write_cfg(tmp_path / 'cfg.py', shapes, model='dict(backbone=dict(out_indices=(1, 2, 3)))')
    out = run('tools/train.py', cfg, '--work-dir', tmp_path / 'w')
    assert out.returncode == 1
    assert ("neck in_channels [96, 288, 800] do not match the backbone's output "
            'channels [32, 96, 288]') in out.stderr


def test_missing_pretrained_weights_explain_how_to_get_them(tmp_path, shapes):
    cfg = write_cfg(tmp_path / 'cfg.py', shapes, model=(
        "dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained', "
        "prefix='backbone.', checkpoint='checkpoints/absent_deploy_in1k.pth')))"))
    out = run('tools/train.py', cfg, '--work-dir', tmp_path / 'w')
    assert out.returncode == 1
    assert 'checkpoints/absent_deploy_in1k.pth not found' in out.stderr
    assert 'checkpoints/README.md' in out.stderr and 'model.backbone.init_cfg=None' in out.stderr


def test_undecodable_image_is_skipped_in_training_and_named_in_test(tmp_path, shapes):
    import shutil
    root = tmp_path / 'broken'
    shutil.copytree(shapes, root)
    (root / 'train/00003.png').write_bytes(b'not a png')
    (root / 'val/00002.png').write_bytes(b'not a png')
    cfg = write_cfg(tmp_path / 'cfg.py', root, epochs=1, val_root=shapes)
    out = run('tools/train.py', cfg, '--work-dir', tmp_path / 'w')
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'skipping image' in out.stdout + out.stderr and '00003.png' in out.stdout + out.stderr
    bad_val = write_cfg(tmp_path / 'bad_val.py', root, epochs=1)
    out = run('tools/test.py', bad_val, tmp_path / 'w/epoch_1.pth', '--work-dir', tmp_path / 'w')
    assert out.returncode != 0
    assert 'cannot load image' in out.stderr and 'val/00002.png' in out.stderr
