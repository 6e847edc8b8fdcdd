"""``norm_cfg`` of the CondenseNets: SyncBN for multi-GPU detection training.

Every norm of the backbone (the LGC, 3x3 conv and SFR pre-activation norms and the
output norms) is built from ``norm_cfg``; ``dict(type='BN')`` gives today's modules
and keys, so weights load across the two. Without a process group a SyncBatchNorm
normalises as a BatchNorm on the CPU, which the tests use.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope, MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten

from conftest import REPO
from mmsfr.models import CondenseNet, CondenseNetV2, condense_model, convert_to_deploy
from mmsfr.models.layers.dense_plan import activation_code, dense_plan, se_arguments
from mmsfr import ops
from mmsfr.models.layers.norm_act import build_norm, is_plain_batchnorm
from mmsfr.testing import randomise_bn, rel_diff

SYNC_BN = dict(type='SyncBN', requires_grad=True)
TINY_V2 = dict(depths=(1, 2, 2), growths=(4, 8, 8), groups=2, condense_factor=2,
               sparse_factor=2, hs_from=1, se_from=1)
TINY_V1 = dict(TINY_V2, sparse_factor=None, hs_from=None, se_from=None)
MODELS_ = [(CondenseNetV2, TINY_V2), (CondenseNet, TINY_V1)]
IDS = ['CondenseNetV2', 'CondenseNet']


def norms(model: nn.Module) -> dict[str, _BatchNorm]:
    return {n: m for n, m in model.named_modules() if isinstance(m, _BatchNorm)}


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize('deploy', [False, True], ids=['train-time', 'deploy'])
@pytest.mark.parametrize('cls,arch', MODELS_, ids=IDS)
def test_syncbn_everywhere_with_the_keys_of_bn(cls, arch, deploy):
    bn = cls(arch=arch, out_norm='all', deploy=deploy)
    sync = cls(arch=arch, out_norm='all', deploy=deploy, norm_cfg=SYNC_BN)
    assert {type(m) for m in norms(bn).values()} == {nn.BatchNorm2d}
    assert norms(sync).keys() == norms(bn).keys()
    assert all(isinstance(m, nn.SyncBatchNorm) for m in norms(sync).values())
    names = set(norms(sync))
    assert {'norms.1', 'blocks.0.0.conv_1.norm', 'blocks.0.0.conv_2.norm'} <= names
    assert ('blocks.0.0.sfr.norm' in names) == (cls is CondenseNetV2)
    assert shapes(sync) == shapes(bn)
    assert list(sync.state_dict()) == list(bn.state_dict())
    frozen = cls(arch=arch, deploy=deploy, norm_cfg=dict(type='SyncBN', requires_grad=False))
    for name, param in frozen.named_parameters():
        assert param.requires_grad == ('.norm.' not in name and not name.startswith('norms.'))


@pytest.mark.parametrize('cls,arch', MODELS_, ids=IDS)
def test_bn_checkpoint_loads_into_a_syncbn_model(cls, arch, tmp_path):
    bn = randomise_bn(cls(arch=arch, out_indices=(0, 1, 2)))
    path = tmp_path / 'bn.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in bn.state_dict().items()}}, path)
    sync = cls(arch=arch, out_indices=(0, 1, 2), norm_cfg=SYNC_BN,
               init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    sync.init_weights()
    for key, value in bn.state_dict().items():
        assert torch.equal(sync.state_dict()[key], value), key
    x = torch.rand(2, 3, 48, 40)
    for mode in ('eval', 'train'):  # train: batch statistics, no process group
        getattr(bn, mode)()
        getattr(sync, mode)()
        with torch.no_grad():
            for a, b in zip(sync(x), bn(x)):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('cls,arch', MODELS_, ids=IDS)
def test_syncbn_model_converts_to_deploy_exactly(cls, arch):
    torch.manual_seed(0)
    model = randomise_bn(cls(arch=arch, out_norm='all', norm_cfg=SYNC_BN)).eval()
    condense_model(model, 1.0)
    x = torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        masked = model(x)
    convert_to_deploy(model)
    assert all(isinstance(m, nn.SyncBatchNorm) for m in norms(model).values())
    built = cls(arch=arch, out_norm='all', norm_cfg=SYNC_BN, deploy=True)
    assert shapes(built) == shapes(model)
    built.load_state_dict(model.state_dict())
    layer = model.blocks[-1][-1]
    assert (dense_plan(layer, torch.empty(1)) is not None) == ops.native_available()
    for native_on in (True, False):
        with torch.no_grad(), ops.native_kernels(native_on):
            for a, b in zip(model(x), masked):
                assert rel_diff(a, b) < 1e-5
    model.train()  # batch statistics: neither the kernels nor the affine fast path
    assert dense_plan(layer, torch.empty(1)) is None


class DoubledBatchNorm(nn.BatchNorm2d):
    """A BatchNorm whose forward differs from torch's: not a plain BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_a_batchnorm_with_its_own_forward_runs_as_its_module():
    assert is_plain_batchnorm(nn.SyncBatchNorm(4)) and is_plain_batchnorm(nn.BatchNorm2d(4))
    assert not is_plain_batchnorm(DoubledBatchNorm(4))
    assert not is_plain_batchnorm(nn.BatchNorm2d(4, track_running_stats=False))
    torch.manual_seed(0)
    model = randomise_bn(CondenseNetV2(arch=TINY_V2, norm_cfg=dict(type=DoubledBatchNorm)))
    condense_model(model, 1.0)
    model.switch_to_deploy()
    model.eval()
    assert isinstance(model.blocks[0][0].conv_1.norm, DoubledBatchNorm)
    assert dense_plan(model.blocks[-1][-1], torch.empty(1)) is None
    x = torch.rand(1, 3, 48, 40)
    reference = model(x)  # autograd: the modules themselves
    with torch.inference_mode():
        fast = model(x)
    for a, b in zip(fast, reference):
        assert rel_diff(a, b.detach()) < 1e-5


@pytest.mark.parametrize('norm_cfg,match', [
    (dict(type='GN', num_groups=2), r"norm_cfg=\{'type': 'GN', 'num_groups': 2\} names "
                                    r'GroupNorm, not a BatchNorm'),
    (dict(type='LN'), 'names LayerNorm, not a BatchNorm'),
    (dict(type='IN'), 'names InstanceNorm2d, not a BatchNorm'),
    (dict(type='SynBN'), r"names no registered norm layer \(type 'SynBN'\)"),
    (dict(type='BN1d'), 'builds BatchNorm1d, which does not take 4-D feature maps'),
    (dict(type='BN', affine=False), 'without affine parameters or running statistics'),
    (dict(type='BN', momentm=0.1), r"cannot be built \(TypeError: .*momentm"),
    (dict(requires_grad=True), 'is not a dict with a "type" key'),
    (None, 'norm_cfg=None is not a dict with a "type" key'),
    ('SyncBN', 'is not a dict with a "type" key'),
])
@pytest.mark.parametrize('cls,arch', MODELS_, ids=IDS)
def test_a_bad_norm_cfg_gets_one_clear_error(cls, arch, norm_cfg, match):
    with pytest.raises(ValueError, match=rf'^{cls.__name__}: .*{match}.*e\.g\. '
                                         r"dict\(type='BN'\)"):
        cls(arch=arch, norm_cfg=norm_cfg)


def test_build_norm_follows_device_and_dtype():
    norm = build_norm(SYNC_BN, 6, device='meta', dtype=torch.float64)
    assert norm.weight.device.type == 'meta' and norm.weight.dtype == torch.float64
    assert norm.num_batches_tracked.dtype == torch.int64


def condensenet_configs() -> list[Path]:
    """Every config whose backbone is a CondenseNet (by name; checked on loading)."""
    paths = [*REPO.glob('configs/*condensenetv2*.py'), *REPO.glob('configs/demo/*.py'),
             *REPO.glob('configs/pretrain/condensenet*/*.py')]
    return sorted(p.relative_to(REPO) for p in paths)


@pytest.mark.parametrize('cfg_path', condensenet_configs(), ids=str)
def test_every_condensenet_config_builds_with_syncbn(cfg_path):
    cfg = Config.fromfile(str(REPO / cfg_path))
    assert cfg.model.backbone.type in ('CondenseNetV2', 'CondenseNet')
    # what `--cfg-options model.backbone.norm_cfg="dict(type='SyncBN',requires_grad=True)"` does
    cfg.merge_from_dict({'model.backbone.norm_cfg': SYNC_BN, 'model.backbone.init_cfg': None})
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert norms(backbone) and all(isinstance(m, nn.SyncBatchNorm)
                                   for m in norms(backbone).values())
    reference = copy.deepcopy(cfg.model.backbone)
    reference.pop('norm_cfg')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        assert shapes(MODELS.build(reference)) == shapes(backbone)
    if backbone.arch_name in ('a', 'custom', 'cifar-110'):  # a forward of the small ones
        model.eval()
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            outs = backbone(x)
            whole = model.extract_feat(x)  # backbone + neck
        assert [o.shape[1] for o in outs] == list(backbone.out_channels)
        assert all(torch.isfinite(t).all() for t in tree_flatten(whole)[0])
