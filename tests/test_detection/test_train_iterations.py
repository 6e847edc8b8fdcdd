"""Two training iterations and a validation through ``tools/train.py`` (the smoke test
of a stack: data pipeline, detector, optimizer, hooks, checkpoint, COCO metric)."""
import os
import subprocess
import sys

from conftest import REPO
from mmsfr.testing import tiny_demo_config


def _tiny_config(tmp_path):
    """The demo on 4 + 2 generated 64x64 images: 2 iterations of batch 2."""
    cfg = tiny_demo_config(tmp_path, train=4, val=2, size=64, seed=3)
    return cfg.rename(tmp_path / 'cfg.py')


def test_two_iterations_through_train_py(tmp_path):
    cfg = _tiny_config(tmp_path)
    work = tmp_path / 'work'
    out = subprocess.run([sys.executable, 'tools/train.py', str(cfg), '--work-dir', str(work)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert 'Epoch(train) [1][2/2]' in text
    assert 'coco/bbox_mAP' in text
    assert (work / 'epoch_1.pth').exists()


def test_dist_train_takes_paths_relative_to_the_caller(tmp_path):
    """tools/dist_train.sh run from another directory with a relative config path."""
    _tiny_config(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS='1', PORT='29531',
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'])
    out = subprocess.run(['bash', str(REPO / 'tools/dist_train.sh'), 'cfg.py', '1',
                          '--work-dir', 'work'], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert 'Distributed training: True' in text
    assert (tmp_path / 'work' / 'epoch_1.pth').exists()
