"""Tests of SFR-ShuffleNetV2 / SFR-ShuffleNetV2+, the ShuffleNet configs and converters."""
from __future__ import annotations

import copy
import importlib.util
import lzma
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmpretrain.apis import init_model
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmsfr  # noqa: F401  (registers the models)
from mmsfr.analysis import count_complexity
from mmsfr.models import (SFRShuffleNetV2, SFRShuffleNetV2Plus, ShuffleNetV2,
                          ShuffleNetV2Plus, condense_model)
from mmsfr.models.layers import SparseFeatureReactivation, condensing_layers
from mmsfr.testing import rel_diff

from conftest import randomise_bn, REPO, fixture_path, load_fixture

CONFIGS = REPO / 'configs' / 'pretrain' / 'shufflenetv2'
SFR_MODELS = [(SFRShuffleNetV2, '0.5x'), (SFRShuffleNetV2, '1.0x'), (SFRShuffleNetV2, '1.5x'),
              (SFRShuffleNetV2Plus, 'small'), (SFRShuffleNetV2Plus, 'medium')]
# CondenseNetV2 supplement Tables 7-8: FLOPs (M, conv/linear MACs + activation and
# pooling element ops) and params (M).
PAPER = {'0.5x': (43, 1.4), '1.0x': (150, 2.3), '1.5x': (306, 3.5), 'small': (161, 5.2),
         'medium': (229, 5.7)}
# Supplement Tables 2 and 4 (Small's 213 read as 208 = 416 / 2).
SPARSE_FACTORS = {'0.5x': (24, 48, 96), '1.0x': (58, 116, 232), '1.5x': (88, 176, 352),
                  'small': (18, 52, 104, 208), 'medium': (24, 64, 128, 256)}
REQUIRED_CONFIGS = (
    [f'shufflenetv2-x{w}_8xb128_in1k.py' for w in ('0_5', '1_0', '1_5', '2_0')] +
    [f'shufflenetv2plus-{a}_8xb128_in1k.py' for a in 'sml'] +
    [f'sfr-shufflenetv2-x{w}_{s}.py' for w in ('0_5', '1_0', '1_5')
     for s in ('8xb128_in1k', 'deploy_in1k')] +
    [f'sfr-shufflenetv2plus-{a}_{s}.py' for a in 'sm' for s in ('8xb128_in1k', 'deploy_in1k')])


# ---------------------------------------------------------------------------- helpers


def build_classifier(cls: type, arch: str, **backbone) -> nn.Module:
    from mmpretrain.registry import MODELS
    if cls is SFRShuffleNetV2:
        head = dict(type='ShuffleNetV2ClsHead', num_classes=1000, in_channels=1024)
    else:
        head = dict(type='ShuffleNetV2PlusClsHead', num_classes=1000)
    return MODELS.build(dict(
        type='ImageClassifier', neck=dict(type='GlobalAveragePooling'), head=head,
        backbone=dict(type=cls.__name__, arch=arch, out_indices=(4, ), **backbone)))


def run_tool(*args) -> subprocess.CompletedProcess:
    """Run a tool script in a fresh interpreter (the real command line)."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


def tool_main(script: str, *args, capsys) -> tuple[int, str, str]:
    """Run a tool script's ``main(argv)`` in-process (saves an interpreter start-up)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------------------- structure
@pytest.mark.parametrize('cls, arch', SFR_MODELS)
def test_output_shapes_and_placement(cls, arch):
    model = cls(arch=arch, out_indices=(0, 1, 2, 3, 4)).eval()
    widths = cls.arch_settings[arch]['stage_channels']
    plain = ShuffleNetV2 if cls is SFRShuffleNetV2 else ShuffleNetV2Plus
    reference = plain(arch=arch, out_indices=(0, 1, 2, 3, 4))
    assert model.out_channels == reference.out_channels
    assert model.out_strides == reference.out_strides == (4, 8, 16, 32, 32)
    assert model.out_channels[-2] == widths[-1]
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert len(outs) == 5
    for out, c, s in zip(outs, model.out_channels, model.out_strides):
        assert out.shape == (1, c, 64 // s, 64 // s)
    # SFR in every stride-1 unit, none in the stride-2 units; S = G = c/2, 3x3.
    assert model.arch['sfr_factors'] == SPARSE_FACTORS[arch]
    for s, stage in enumerate(model.stages):
        assert stage[0].stride == 2 and stage[0].sfr is None
        for unit in stage[1:]:
            sfr = unit.sfr
            assert isinstance(sfr, SparseFeatureReactivation)
            assert sfr.in_channels == sfr.out_channels == widths[s] // 2
            assert sfr.factor == sfr.groups == widths[s] // 2 and sfr.kernel_size == 3
    assert len(model.sfr_units()) == sum(len(st) - 1 for st in model.stages)


def test_sfr_starts_as_identity():
    torch.manual_seed(0)
    model = SFRShuffleNetV2(arch='0.5x', out_indices=(3, )).eval()
    plain = ShuffleNetV2(arch='0.5x', out_indices=(3, )).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all('.sfr.' in k for k in unexpected)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], plain(x)[0])


def test_registry_and_plain_names():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    for registry in (MMDET_MODELS, MMPRETRAIN_MODELS):
        assert registry.get('SFRShuffleNetV2') is SFRShuffleNetV2
        assert registry.get('SFRShuffleNetV2Plus') is SFRShuffleNetV2Plus


# ---------------------------------------------------------------------------- condensation
@pytest.mark.parametrize('cls, kwargs', [
    (SFRShuffleNetV2, dict(arch='0.5x')),
    (SFRShuffleNetV2, dict(arch='0.5x', layout='torchvision')),
    (SFRShuffleNetV2Plus, dict(arch=dict(stage_channels=(20, 32, 48, 64)))),
])
def test_condense_then_deploy_is_exact(cls, kwargs):
    torch.manual_seed(0)
    model = cls(out_indices=(0, 1, 2, 3, 4), **kwargs)
    randomise_bn(model)
    model.eval()
    x = torch.rand(2, 3, 64, 64) * 255
    dead = copy.deepcopy(model)
    for unit in dead.sfr_units():
        nn.init.zeros_(unit.sfr.norm.weight)
        nn.init.zeros_(unit.sfr.norm.bias)
    applied = condense_model(model, 0.5)
    assert applied == sum(m.factor - 1 for _, m in condensing_layers(model))
    with torch.no_grad():
        masked = model(x)
        without_sfr = dead(x)
    assert rel_diff(masked[-1], without_sfr[-1]) > 1e-3  # the reactivation does something
    model.switch_to_deploy()
    assert model.deploy and all(m.deploy for _, m in condensing_layers(model))
    for unit in model.sfr_units():  # deploy SFR = depthwise 3x3 + index_add
        conv = unit.sfr.conv
        assert conv.groups == conv.in_channels == conv.out_channels
        assert conv.kernel_size == (3, 3)
    # Every conv -> BN pair is folded; the SFR's pre-activation BN and the SE's stay.
    assert {n.split('.')[-1] for n, m in model.named_modules()
            if isinstance(m, _BatchNorm)} <= {'norm', '1'}
    with torch.no_grad():
        deployed = model(x)
    for a, b in zip(deployed, masked):
        assert rel_diff(a, b) <= 1e-5
    # A deploy model built directly loads the converted weights strictly.
    direct = cls(out_indices=(0, 1, 2, 3, 4), deploy=True, **kwargs).eval()
    direct.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        for a, b in zip(direct(x), masked):
            assert rel_diff(a, b) <= 1e-5


@pytest.mark.parametrize('cls, kwargs', [
    (SFRShuffleNetV2, dict(arch='0.5x', out_indices=(0, 1, 2, 3, 4))),
    (SFRShuffleNetV2Plus, dict(arch=dict(stage_channels=(20, 32, 48, 64)), out_indices=(4, ))),
])
def test_deploy_form_built_directly_has_the_keys_of_the_switched_one(cls, kwargs):
    switched = randomise_bn(cls(**kwargs)).eval()
    condense_model(switched, 1.0)
    switched.switch_to_deploy()
    built = cls(deploy=True, **kwargs)
    shapes = {k: tuple(v.shape) for k, v in switched.state_dict().items()}
    assert list(built.state_dict()) == list(shapes)
    assert {k: tuple(v.shape) for k, v in built.state_dict().items()} == shapes
    built.load_state_dict(switched.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        for a, b in zip(built.eval()(x), switched(x)):
            assert rel_diff(a, b) <= 1e-6


def test_every_keyword_and_default_of_the_hosts():
    """No __init__ of their own: the hosts' keywords, the variants' default archs."""
    assert SFRShuffleNetV2().arch_name == '1.0x'
    assert SFRShuffleNetV2Plus().arch_name == 'small'
    model = SFRShuffleNetV2(widen_factor=0.5, layout='torchvision', out_indices=(1, 4),
                            frozen_stages=1, norm_cfg=dict(type='BN', eps=1e-3),
                            norm_eval=True, with_cp=True, deploy=False, init_cfg=None)
    assert (model.arch_name, model.layout, model.out_indices) == ('0.5x', 'torchvision', (1, 4))
    assert model.stem.bn.eps == 1e-3 and model.with_cp and model.norm_eval
    # The SFR norms start at zero (the reactivation starts as the identity).
    assert all(not u.sfr.norm.weight.any() for u in model.sfr_units())
    with pytest.raises(TypeError, match='takes no widen_factor'):
        SFRShuffleNetV2Plus(widen_factor=1.0)


def test_unfinished_condensation_refused():
    model = SFRShuffleNetV2(arch='0.5x')
    condense_model(model, 0.25)
    with pytest.raises(RuntimeError, match='condensation stage'):
        model.switch_to_deploy()
    assert not model.deploy and not any(m.deploy for _, m in condensing_layers(model))
    # Train-time weights into a deploy model (and back) are refused by name.
    with pytest.raises(ValueError, match='train-time'):
        SFRShuffleNetV2(arch='0.5x', deploy=True).load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match='deploy'):
        SFRShuffleNetV2(arch='0.5x').load_state_dict(
            SFRShuffleNetV2(arch='0.5x', deploy=True).state_dict())


# ---------------------------------------------------------------------------- complexity
@pytest.mark.parametrize('cls, arch', SFR_MODELS)
def test_macs_and_params_vs_paper(cls, arch):
    model = build_classifier(cls, arch, deploy=True)
    counts = count_complexity(model, (3, 224, 224), forward=lambda m, x: m(x, mode='tensor'))
    paper_flops, paper_params = PAPER[arch]
    macs, params = counts['conv_linear_macs'] / 1e6, counts['params'] / 1e6
    # The paper counts activation / pooling element ops too: conv+linear MACs land below.
    assert -0.04 <= macs / paper_flops - 1 <= 0.01, macs
    assert abs(params / paper_params - 1) <= 0.03, params
    assert abs(counts['paper_flops'] / 1e6 / paper_flops - 1) <= 0.02, counts['paper_flops']


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('build, words', [
    (lambda: SFRShuffleNetV2(arch='2.0x'), ["'2.0x'", "'0.5x'", "'1.5x'"]),
    (lambda: SFRShuffleNetV2Plus(arch='large'), ["'large'", "'small'", "'medium'"]),
    (lambda: SFRShuffleNetV2(arch=dict(stage_channels=(48, 96, 192), sfr_factors=(24, 48, 7))),
     ['sfr_factors[2]=7', '96']),
    (lambda: SFRShuffleNetV2(arch=dict(stage_channels=(116, 232, 464), sfr_groups=4)),
     ['sfr_groups[0]=4', '58']),
    (lambda: SFRShuffleNetV2(arch=dict(stage_channels=(48, 96, 192), sfr_factors=(24, 48))),
     ['sfr_factors', 'one entry per stage']),
])
def test_bad_arguments_raise(build, words):
    with pytest.raises(ValueError) as info:
        build()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_sfr_only_in_stride1_units():
    from mmsfr.models.backbones.shufflenetv2 import ShuffleUnit
    with pytest.raises(ValueError, match='stride-2 unit'):
        ShuffleUnit(24, 48, stride=2, sfr_factor=12)
    custom = SFRShuffleNetV2(arch=dict(stage_channels=(48, 96, 192), sfr_groups=(2, 4, 8)))
    assert [st[1].sfr.groups for st in custom.stages] == [2, 4, 8]


# ---------------------------------------------------------------------------- configs
def test_every_config_builds():
    from mmengine.registry import HOOKS
    names = sorted(p.name for p in CONFIGS.glob('*.py'))
    assert set(REQUIRED_CONFIGS) <= set(names)
    for name in names:
        cfg = Config.fromfile(str(CONFIGS / name))
        model = init_model(cfg, device='cpu')
        backbone, pre = model.backbone, model.data_preprocessor
        layout = backbone.layout
        if layout == 'megvii':  # BGR 0-255, no normalisation
            assert not pre.to_rgb, name
            assert pre.mean.flatten().tolist() == [0, 0, 0], name
            assert pre.std.flatten().tolist() == [1, 1, 1], name
        else:
            assert name.endswith('-tv_8xb128_in1k.py') and pre.to_rgb, name
        hooks = cfg.get('custom_hooks', [])
        if name.startswith('sfr-'):
            assert isinstance(backbone, (SFRShuffleNetV2, SFRShuffleNetV2Plus)), name
            deploy = 'deploy' in name
            assert backbone.deploy is deploy, name
            if deploy:
                assert hooks == [], name
            else:
                assert [h['type'] for h in hooks] == ['CondensationHook', 'EMAHook'], name
                assert hooks[0]['end'] == 0.5
                for h in hooks:
                    HOOKS.build(copy.deepcopy(h))
        else:
            assert not condensing_layers(model) and not hooks, name
        epochs = 360 if 'plus' in name else 240
        assert cfg.train_cfg.max_epochs == epochs, name
        assert cfg.optim_wrapper.optimizer.lr == 0.5, name


# ---------------------------------------------------------------------------- converters
@pytest.mark.parametrize('model_name, stem, config', [
    ('shufflenetv2_x1_0', 'shufflenetv2_1.0x', 'shufflenetv2-x1_0_8xb128_in1k.py'),
    ('shufflenetv2plus_s', 'shufflenetv2plus_small', 'shufflenetv2plus-s_8xb128_in1k.py'),
])
def test_official_converter_tool(tmp_path, capsys, model_name, stem, config):
    expected = load_fixture(f'{stem}_expected.pth.xz')
    src = tmp_path / f'{stem}.pth.tar'
    src.write_bytes(lzma.open(fixture_path(f'{stem}.pth.tar.xz')).read())
    dst = tmp_path / 'converted.pth'
    args = ('tools/model_converters/official_to_mmsfr.py', '--model', model_name, src, dst)
    if model_name == 'shufflenetv2_x1_0':  # one real command line; the rest in-process
        out = run_tool(*args)
        code, stdout, stderr = out.returncode, out.stdout, out.stderr
    else:
        code, stdout, stderr = tool_main(*args, capsys=capsys)
    assert code == 0, stderr
    assert config in stdout
    model = init_model(str(CONFIGS / config), str(dst), device='cpu')
    with torch.no_grad():
        logits = model(expected['input'], mode='tensor')  # BGR 0-255
    assert rel_diff(logits, expected['logits']) <= 1e-4


def test_torchvision_converter_tool(tmp_path, capsys):
    torchvision = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    reference = torchvision.models.shufflenet_v2_x1_0()
    randomise_bn(reference)
    reference.eval()
    src, dst = tmp_path / 'tv.pth', tmp_path / 'converted.pth'
    torch.save(reference.state_dict(), src)
    code, _, stderr = tool_main('tools/model_converters/official_to_mmsfr.py', '--model',
                                'torchvision_shufflenetv2_x1_0', src, dst, capsys=capsys)
    assert code == 0, stderr
    model = init_model(str(CONFIGS / 'shufflenetv2-x1_0-tv_8xb128_in1k.py'), str(dst),
                       device='cpu')
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert rel_diff(model(x, mode='tensor'), reference(x)) <= 1e-4


def test_convert_to_deploy_tool_on_sfr_config(tmp_path, capsys):
    train_cfg = CONFIGS / 'sfr-shufflenetv2-x0_5_8xb128_in1k.py'
    model = init_model(str(train_cfg), device='cpu')
    randomise_bn(model)
    condense_model(model, 0.5)
    ckpt, deploy = tmp_path / 'train.pth', tmp_path / 'deploy.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    code, _, stderr = tool_main('tools/convert_to_deploy.py', train_cfg, ckpt, deploy,
                                capsys=capsys)
    assert code == 0, stderr
    deployed = init_model(str(CONFIGS / 'sfr-shufflenetv2-x0_5_deploy_in1k.py'), str(deploy),
                          device='cpu')
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        assert rel_diff(deployed(x, mode='tensor'), model.eval()(x, mode='tensor')) <= 1e-5


def test_convert_to_deploy_tool_folds_a_plain_shufflenet(tmp_path, capsys):
    train_cfg = CONFIGS / 'shufflenetv2-x0_5_8xb128_in1k.py'
    model = randomise_bn(init_model(str(train_cfg), device='cpu')).eval()
    ckpt, deploy = tmp_path / 'train.pth', tmp_path / 'deploy.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    code, out, stderr = tool_main('tools/convert_to_deploy.py', train_cfg, ckpt, deploy,
                                  capsys=capsys)
    assert code == 0, stderr
    state = torch.load(deploy, map_location='cpu')['state_dict']
    assert not any('running_mean' in key for key in state)  # every BN folded
    cfg = Config.fromfile(train_cfg)
    cfg.model.backbone.deploy = True
    deployed = init_model(cfg, str(deploy), device='cpu')
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        assert rel_diff(deployed(x, mode='tensor'), model(x, mode='tensor')) <= 1e-5
    # Converting the deploy form again has nothing left to do; nothing is written.
    again = tmp_path / 'again.pth'
    code, _, stderr = tool_main('tools/convert_to_deploy.py', train_cfg, deploy, again,
                                '--cfg-options', 'model.backbone.deploy=True', capsys=capsys)
    assert code == 1 and 'nothing to convert' in stderr and not again.exists()
