"""The tools print no setuptools ``pkg_resources`` deprecation notice, and silencing it
silences nothing else.

mmengine imports (and reloads) ``pkg_resources`` whenever it reads a config with an
``mmdet::`` / ``mmpretrain::`` base; setuptools < 81 (needed to build mmcv) then warns
on every tool run.
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from conftest import REPO

DEMO = 'configs/demo/retinanet_condensenetv2_demo.py'


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize('tool', ['tools/train.py', 'tools/test.py',
                                  'tools/analysis_tools/model_zoo.py'])
def test_help_has_no_pkg_resources_notice(tool):
    out = run(tool, '--help')
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'Example' in out.stdout or 'example' in out.stdout
    assert 'pkg_resources' not in out.stderr and not out.stderr.strip()


def test_train_error_on_an_mmdet_config_is_the_only_stderr_line(tmp_path):
    """Reading the demo config (an ``mmdet::`` base) used to add the notice three times."""
    out = run('tools/train.py', DEMO, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
              f'train_dataloader.dataset.data_root={tmp_path}/absent/')
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'absent' in lines[0], lines


def test_get_flops_on_a_detector_config_has_no_notice():
    out = run('tools/analysis_tools/get_flops.py', 'configs/retinanet_condensenetv2_a.py',
              '--shape', '64', '--no-mmengine')
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'pkg_resources' not in out.stderr


def test_only_that_notice_is_silenced_and_other_filters_stay():
    from mmsfr.utils.cli import quiet_pkg_resources
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        with quiet_pkg_resources():
            warnings.warn('pkg_resources is deprecated as an API. See ...', UserWarning)
            warnings.warn('pkg_resources is deprecated as an API.', DeprecationWarning)
            warnings.warn('pkg_resources is not deprecated here, another message')
            warnings.warn('something else', DeprecationWarning)
    assert [str(w.message) for w in seen] == [
        'pkg_resources is not deprecated here, another message', 'something else']
    assert warnings.filters == before
    # A filter installed inside the block (as imports do) survives it; ours do not.
    try:
        with quiet_pkg_resources():
            warnings.filterwarnings('ignore', message='installed inside')
        assert warnings.filters[0][1].pattern == 'installed inside'
        assert not any(f[1] is not None and 'pkg_resources' in f[1].pattern
                       for f in warnings.filters)
    finally:
        warnings.filters[:] = before


def test_import_mmsfr_keeps_the_stacks_own_filters():
    """``import mmsfr`` removes only its own filter: those torch/numpy add stay."""
    out = run('-c', 'import warnings; import mmsfr; '
              'print(sorted({f[2].__name__ for f in warnings.filters})); '
              "print(any(f[1] is not None and 'pkg_resources' in f[1].pattern "
              'for f in warnings.filters))')
    assert out.returncode == 0, out.stderr[-2000:]
    categories, leftover = out.stdout.strip().splitlines()
    assert 'TracerWarning' in categories  # torch.jit's own filter, added at import
    assert leftover == 'False'
