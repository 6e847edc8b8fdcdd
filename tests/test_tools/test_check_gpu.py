"""tools/misc/check_gpu.py: one line without a GPU; its checks, run on the CPU."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

TOOL = REPO / 'tools/misc/check_gpu.py'


def _run(*args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          timeout=900, env=env, cwd=REPO)


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is visible')
def test_without_a_gpu_it_says_so_in_one_line():
    out = _run()
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().count('\n') == 0
    assert 'no usable CUDA GPU' in out.stdout


def test_every_check_passes_on_the_cpu():
    out = _run('--device', 'cpu')
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith('| ') and 'verdict' not in ln]
    names = [r.split('|')[1].strip() for r in rows]
    assert len(rows) == 16 and all('| PASS ' in r for r in rows), out.stdout
    for family in ('CondenseNetV2-A', 'CondenseNet-A', 'ShuffleNetV2 0.5x',
                   'ShuffleNetV2+ S', 'SFR-ShuffleNetV2 0.5x', 'SFR-ShuffleNetV2+ S'):
        assert f'{family} train-time' in names and f'{family} deploy' in names
    assert 'masks identical' in out.stdout and '20 iterations' in out.stdout


def test_a_deploy_difference_fails_its_check(monkeypatch):
    spec = importlib.util.spec_from_file_location('check_gpu', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(tool, 'TOLERANCE', -1.0)  # any difference, even 0, is too large
    with pytest.raises(RuntimeError, match='differs from the reference'):
        tool.check_deploy('cpu', 'CondenseNetV2-A', 'CondenseNetV2', dict(arch='a'))
    rows = tool.run_checks('cpu', skip_train=True, skip_ddp=True)
    assert ('condensation + conversion', 'FAIL') == rows[-1][:2]
