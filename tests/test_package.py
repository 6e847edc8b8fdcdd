"""The package as installed: version ranges, registries, the optional C++ build."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.registry import DefaultScope

import mmsfr
from mmsfr.utils import check_versions
from mmsfr.version import REQUIRED_VERSIONS


def test_installed_stack_is_accepted():
    check_versions()  # the environment the suite runs in


def test_version_guard_lists_every_bad_package():
    installed = {name: low for name, (low, _) in REQUIRED_VERSIONS.items()}
    installed['mmcv'] = '2.2.0'
    installed['mmdet'] = None
    with pytest.raises(ImportError) as err:
        check_versions(installed)
    msg = str(err.value)
    assert 'mmcv 2.2.0 (need >=2.0.0, <2.2.0)' in msg
    assert 'mmdet is not installed' in msg
    assert 'torch' not in msg.split('Required')[0]  # only the bad ones are listed first


@pytest.mark.parametrize('scope', ['mmdet', 'mmpretrain'])
def test_backbone_resolves_in_both_scopes(scope):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(dict(type='CondenseNetV2', arch='a', out_indices=(4,)))
    assert type(model).__name__ == 'CondenseNetV2'
    assert model(torch.rand(1, 3, 64, 64))[0].shape == (1, 800, 2, 2)


def test_hook_resolves_in_both_scopes():
    from mmdet.registry import HOOKS as DET_HOOKS
    from mmpretrain.registry import HOOKS as CLS_HOOKS
    for registry in (DET_HOOKS, CLS_HOOKS):
        assert type(registry.build(dict(type='CondensationHook'))).__name__ == 'CondensationHook'


def test_version_attribute():
    assert mmsfr.__version__.count('.') == 2


REPO = Path(__file__).resolve().parents[1]


def _ranges(name: str) -> dict[str, str]:
    lines = (REPO / 'requirements' / name).read_text().splitlines()
    found = {}
    for line in lines:
        m = re.match(r'^([A-Za-z0-9_-]+)(>=.*)$', line.strip())
        if m:
            found[m[1]] = m[2]
    return found


def test_install_requires_are_the_supported_ranges():
    """setup.py's ranges (requirements/*.txt) equal the import-time check's."""
    declared = {**_ranges('torch.txt'), **_ranges('mmcv.txt'), **_ranges('runtime.txt')}
    for name, (low, high) in REQUIRED_VERSIONS.items():
        assert declared[name] == f'>={low},<{high}', name
    assert REQUIRED_VERSIONS['torch'][0] == '2.1.0'  # users' mmdet environments
    # The oldest tested stack sits at the lower end of every range it pins.
    oldest = (REPO / 'requirements' / 'oldest.txt').read_text()
    assert 'torch==2.1.2' in oldest and 'numpy<2' in oldest


def test_a_failed_kernel_build_installs_without_it(tmp_path):
    """A compile error (with ninja, torch raises RuntimeError) warns and goes on."""
    for name in ('setup.py', 'README.md', 'requirements', 'mmsfr/version.py',
                 'mmsfr/csrc'):
        src, dst = REPO / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    (tmp_path / 'mmsfr' / '__init__.py').write_text('')
    cpp = tmp_path / 'mmsfr' / 'csrc' / 'cpu' / 'dense_layer.cpp'
    cpp.write_text('#error this source is broken on purpose\n' + cpp.read_text())
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get('PATH', ''))
    assert shutil.which('ninja', path=env['PATH']), 'ninja makes torch raise RuntimeError'
    out = subprocess.run([sys.executable, 'setup.py', 'build_ext', '--inplace'],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'WARNING: mmsfr._ext is not built (compiling mmsfr._ext failed' in out.stderr
    assert not list((tmp_path / 'mmsfr').glob('_ext*.so'))


@pytest.mark.parametrize('old,new', [
    ('mmsfr.models.layers.condense:bn_affine', 'mmsfr.models.layers.norm_act:bn_affine'),
    ('mmsfr.models.layers.condense:PreActConv', 'mmsfr.models.layers.norm_act:PreActConv'),
    ('mmsfr.models.layers.condense:eval_norm', 'mmsfr.models.layers.norm_act:eval_norm'),
    ('mmsfr.models.layers.condense:convert_to_deploy', 'mmsfr.models.deploy:convert_to_deploy'),
    ('mmsfr.models.backbones.condensenet:native_arguments',
     'mmsfr.models.layers.dense_plan:dense_plan'),
    ('mmsfr.models.layers.native:native_kernels', 'mmsfr.ops:native_kernels'),
    ('mmsfr.models.layers.native:se_arguments', 'mmsfr.models.layers.dense_plan:se_arguments'),
])
def test_moved_names_keep_their_old_address_with_a_warning(old, new):
    import importlib
    (old_module, old_name), (new_module, new_name) = (s.split(':') for s in (old, new))
    expected = getattr(importlib.import_module(new_module), new_name)
    with pytest.warns(DeprecationWarning, match=f'{old_module}.{old_name} moved to '
                      f'{new_module}.{new_name}'):
        assert getattr(importlib.import_module(old_module), old_name) is expected
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        getattr(importlib.import_module(old_module), 'no_such_name')


def test_converters_keep_their_old_addresses():
    from mmsfr.converters import convert_official_shufflenetv2
    from mmsfr.models.backbones import shufflenetv2
    assert shufflenetv2.convert_official_shufflenetv2 is convert_official_shufflenetv2
