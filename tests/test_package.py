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
    installed['mmcv'] = '2.0.1'
    installed['mmdet'] = None
    with pytest.raises(ImportError) as err:
        check_versions(installed)
    msg = str(err.value)
    assert 'mmcv 2.0.1 (need >=2.1.0, <2.2.0)' in msg
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
