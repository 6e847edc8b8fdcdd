"""Tests of the ShuffleNetV2 / ShuffleNetV2+ backbones, heads and converters."""
from __future__ import annotations

import functools
import io
import lzma
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmsfr  # noqa: F401  (registers the models)
from mmsfr.converters import (convert_official_shufflenetv2,
                              convert_official_shufflenetv2plus,
                              convert_torchvision_shufflenetv2)
from mmsfr.models import ShuffleNetV2, ShuffleNetV2Plus
from mmsfr.models.deploy import pending_deploy

from conftest import randomise_bn

REPO = Path(__file__).resolve().parents[2]
V2_ARCHS = ('0.5x', '1.0x', '1.5x', '2.0x')
V2PLUS_ARCHS = ('small', 'medium', 'large')
# Paper / megvii README: params (M, classifier included) and conv + linear MACs (M).
PAPER = {
    '0.5x': (1.4, 41), '1.0x': (2.3, 146), '1.5x': (3.5, 299), '2.0x': (7.4, 591),
    'small': (5.1, 156), 'medium': (5.6, 222), 'large': (6.7, 360),
}


# ---------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def load_fixture(name: str):
    """Load an xz-compressed parity fixture (cached, read-only), or skip if absent."""
    root = Path(os.environ.get('MMSFR_FIXTURES', REPO.parent / 'shared' / 'fixtures'))
    path = root / name
    if not path.exists():
        pytest.skip(f'parity fixture {path} not available')
    return torch.load(io.BytesIO(lzma.open(path).read()), map_location='cpu')


def build_classifier(arch: str, layout: str = 'megvii', head: dict | None = None,
                     deploy: bool = False) -> nn.Module:
    """An mmpretrain ImageClassifier with an mmsfr ShuffleNetV2 / V2+ backbone."""
    from mmpretrain.registry import MODELS
    if arch in V2PLUS_ARCHS:
        backbone = dict(type='ShuffleNetV2Plus', arch=arch, out_indices=(4, ))
        head = head or dict(type='ShuffleNetV2PlusClsHead', num_classes=1000)
    else:
        # In the mmpretrain scope the plain name is mmpretrain's own ShuffleNetV2.
        backbone = dict(type='mmsfr.models.ShuffleNetV2', arch=arch, layout=layout,
                        out_indices=(4, ))
        head = head or dict(type='ShuffleNetV2ClsHead', num_classes=1000,
                            in_channels=2048 if arch == '2.0x' else 1024)
    backbone['deploy'] = deploy
    return MODELS.build(dict(type='ImageClassifier', backbone=backbone,
                             neck=dict(type='GlobalAveragePooling'), head=head))


def count_macs(model: nn.Module, size: int = 224) -> int:
    """Multiply-adds of every nn.Conv2d and nn.Linear for one image of ``size``."""
    total = 0

    def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        per_output = (m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                      if isinstance(m, nn.Conv2d) else m.in_features)
        total += out[0].numel() * per_output

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.rand(1, 3, size, size), mode='tensor')
    finally:
        for h in handles:
            h.remove()
    return total




def released_classifier(arch: str, stem: str, converter) -> tuple[nn.Module, dict]:
    """The eval-mode classifier holding a released megvii checkpoint (strictly loaded)
    and that checkpoint's expected logits."""
    checkpoint = load_fixture(f'{stem}.pth.tar.xz')
    model = build_classifier(arch).eval()
    result = model.load_state_dict(converter(checkpoint['state_dict'], arch=arch),
                                   strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model, load_fixture(f'{stem}_expected.pth.xz')


def small_models() -> list[tuple[str, nn.Module]]:
    return [('v2-0.5x', ShuffleNetV2(arch='0.5x', out_indices=(0, 1, 2, 3, 4))),
            ('v2-0.5x-tv', ShuffleNetV2(arch='0.5x', layout='torchvision',
                                        out_indices=(0, 1, 2, 3, 4))),
            ('v2plus-small', ShuffleNetV2Plus(arch='small', out_indices=(0, 1, 2, 3, 4)))]


# ---------------------------------------------------------------------------- parity
@pytest.mark.parametrize('arch, stem, converter', [
    ('1.0x', 'shufflenetv2_1.0x', convert_official_shufflenetv2),
    ('small', 'shufflenetv2plus_small', convert_official_shufflenetv2plus),
])
def test_megvii_parity(arch, stem, converter):
    model, expected = released_classifier(arch, stem, converter)
    with torch.no_grad():
        logits = model(expected['input'], mode='tensor')  # BGR 0-255, no normalisation
    ref = expected['logits']
    assert logits.shape == ref.shape
    diff = (logits - ref).abs().max().item()
    assert diff <= 1e-4 * ref.abs().max().item(), diff


@pytest.mark.parametrize('arch, stem, converter', [
    ('1.0x', 'shufflenetv2_1.0x', convert_official_shufflenetv2),
    ('small', 'shufflenetv2plus_small', convert_official_shufflenetv2plus),
])
def test_deploy_form_keeps_released_weight_parity(arch, stem, converter, tmp_path):
    """switch_to_deploy folds every conv -> BN pair; the released logits stay."""
    model, expected = released_classifier(arch, stem, converter)
    checkpoint = load_fixture(f'{stem}.pth.tar.xz')
    x, ref = expected['input'], expected['logits']
    with torch.no_grad():
        before = model(x, mode='tensor')
    model.backbone.switch_to_deploy()
    backbone = model.backbone
    assert backbone.deploy
    # No BatchNorm is left outside the SE blocks (their BN follows a pooled vector).
    assert not [n for n, m in backbone.named_modules()
                if isinstance(m, _BatchNorm) and '.fc.' not in n]
    with torch.no_grad():
        after = model(x, mode='tensor')
    assert (after - before).abs().max() <= 1e-5 * before.abs().max()
    assert (after - ref).abs().max() <= 1e-4 * ref.abs().max()
    # A model built with deploy=True takes these weights, and folds the released ones
    # as it loads them (the converted dict it is given is left as it was).
    deployed = build_classifier(arch, deploy=True).eval()
    deployed.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(deployed(x, mode='tensor'), after)
    released = converter(checkpoint['state_dict'], arch=arch)
    keys = set(released)
    folding = build_classifier(arch, deploy=True).eval()
    folding.load_state_dict(released, strict=True)
    assert set(released) == keys
    with torch.no_grad():
        assert (folding(x, mode='tensor') - after).abs().max() <= 1e-6 * after.abs().max()
    with pytest.raises(ValueError, match='deploy form .BatchNorm folded.*train-time form'):
        build_classifier(arch).load_state_dict(model.state_dict())
    # As a detector would: a deploy backbone initialised from the released file.
    path = tmp_path / 'released.pth'
    torch.save({'state_dict': released}, path)
    cls = ShuffleNetV2Plus if arch in V2PLUS_ARCHS else ShuffleNetV2
    backbone = cls(arch=arch, out_indices=(4, ), deploy=True, init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    backbone.init_weights()
    with torch.no_grad():
        ref_feat = model.backbone.eval()(x)[0]
        assert (backbone.eval()(x)[0] - ref_feat).abs().max() <= 1e-5 * ref_feat.abs().max()


@pytest.mark.parametrize('head_type', ['LinearClsHead', 'ShuffleNetV2ClsHead'])
def test_torchvision_parity(head_type):
    torchvision = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    reference = torchvision.models.shufflenet_v2_x1_0()
    randomise_bn(reference)
    reference.eval()
    head = dict(type=head_type, num_classes=1000, in_channels=1024)
    if head_type == 'ShuffleNetV2ClsHead':
        head['bias'] = True
    model = build_classifier('1.0x', layout='torchvision', head=head).eval()
    model.load_state_dict(convert_torchvision_shufflenetv2(reference.state_dict(), '1.0x'),
                          strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref, ours = reference(x), model(x, mode='tensor')
    assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max()


# ---------------------------------------------------------------------------- structure
@pytest.mark.parametrize('cls, arch, layout', [
    *[(ShuffleNetV2, a, lay) for a in V2_ARCHS for lay in ('megvii', 'torchvision')],
    *[(ShuffleNetV2Plus, a, 'megvii') for a in V2PLUS_ARCHS],
])
def test_output_shapes(cls, arch, layout):
    model = cls(arch=arch, layout=layout, out_indices=(0, 1, 2, 3, 4)).eval()
    widths = cls.arch_settings[arch]['stage_channels']
    last = 2048 if arch == '2.0x' else (1024 if cls is ShuffleNetV2 else 1280)
    if cls is ShuffleNetV2:
        assert model.out_channels == (24, *widths, last)
    else:
        assert model.out_channels == (*widths, last)
    assert model.out_strides == (4, 8, 16, 32, 32)
    assert [f['num_chs'] for f in model.feature_info] == list(model.out_channels)
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert len(outs) == 5
    for out, c, s in zip(outs, model.out_channels, model.out_strides):
        assert out.shape == (1, c, 64 // s, 64 // s)


def test_default_outputs_and_conv_last():
    model = ShuffleNetV2()
    assert model.arch_name == '1.0x' and model.layout == 'megvii'
    assert model.out_indices == (0, 1, 2, 3) and model.conv_last is None
    assert model.out_channels == (24, 116, 232, 464)
    assert ShuffleNetV2(widen_factor=1.5).arch_name == '1.5x'
    plus = ShuffleNetV2Plus(out_indices=(1, 2, 3))
    assert plus.conv_last is None and plus.out_channels == (104, 208, 416)
    assert plus.out_strides == (8, 16, 32)
    assert ShuffleNetV2Plus(arch='Large').arch_name == 'large'


@pytest.mark.parametrize('cls, kwargs', [
    (ShuffleNetV2, dict(arch='0.5x', out_indices=(0, 1, 2, 3, 4))),
    (ShuffleNetV2, dict(arch='1.0x', layout='torchvision', out_indices=(4, ))),
    (ShuffleNetV2Plus, dict(arch='small', out_indices=(0, 1, 2, 3, 4))),
    (ShuffleNetV2, dict(arch='0.5x', norm_cfg=dict(type='GN', num_groups=4))),
])
def test_deploy_form_built_directly_equals_the_switched_one(cls, kwargs):
    """deploy=True builds the form switch_to_deploy() makes: same modules and keys."""
    switched = randomise_bn(cls(**kwargs)).eval()
    switched.switch_to_deploy()
    built = cls(deploy=True, **kwargs)
    assert built.deploy and not pending_deploy(built)
    shapes = {k: tuple(v.shape) for k, v in switched.state_dict().items()}
    assert list(built.state_dict()) == list(shapes)
    assert {k: tuple(v.shape) for k, v in built.state_dict().items()} == shapes
    assert repr(built) == repr(switched)
    built.load_state_dict(switched.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(built.eval()(x), switched(x)):
            assert torch.equal(a, b)


def test_subclasses_keep_the_arguments_and_defaults():
    """The variants take ShuffleNetV2's arguments; only their defaults differ."""
    assert ShuffleNetV2Plus(deploy=True, with_cp=True).arch_name == 'small'
    with pytest.raises(TypeError, match='ShuffleNetV2Plus takes no widen_factor'):
        ShuffleNetV2Plus(widen_factor=1.0)


def test_converters_answer_at_their_former_addresses():
    import mmsfr.converters as converters
    from mmsfr.models.backbones import shufflenetv2
    for name in ('convert_official_shufflenetv2', 'convert_official_shufflenetv2plus',
                 'convert_torchvision_shufflenetv2'):
        assert getattr(shufflenetv2, name) is getattr(converters, name)
    assert convert_official_shufflenetv2 is converters.convert_official_shufflenetv2


def test_registry_scopes():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    assert MMDET_MODELS.get('ShuffleNetV2') is ShuffleNetV2
    assert MMDET_MODELS.get('ShuffleNetV2Plus') is ShuffleNetV2Plus
    assert MMPRETRAIN_MODELS.get('mmsfr.models.ShuffleNetV2') is ShuffleNetV2
    assert MMPRETRAIN_MODELS.get('ShuffleNetV2Plus') is ShuffleNetV2Plus


@pytest.mark.parametrize('arch', V2_ARCHS + V2PLUS_ARCHS)
def test_params_and_macs_match_paper(arch):
    model = build_classifier(arch).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    macs = count_macs(model) / 1e6
    paper_params, paper_macs = PAPER[arch]
    assert abs(params - paper_params) <= 0.03 * paper_params, params
    assert abs(macs - paper_macs) <= 0.03 * paper_macs, macs


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize('cls, frozen', [(ShuffleNetV2, 0), (ShuffleNetV2, 2),
                                         (ShuffleNetV2, 3), (ShuffleNetV2Plus, 1),
                                         (ShuffleNetV2Plus, 4)])
def test_frozen_stages(cls, frozen):
    arch = '0.5x' if cls is ShuffleNetV2 else 'small'
    model = cls(arch=arch, frozen_stages=frozen, out_indices=(0, 1, 2, 3, 4))
    model.train()
    frozen_modules = [model.stem] + [model.stages[i] for i in range(frozen)]
    for m in frozen_modules:
        assert all(not p.requires_grad for p in m.parameters())
        assert all(not b.training for b in m.modules() if isinstance(b, _BatchNorm))
    live = [model.stages[i] for i in range(frozen, len(model.stages))] + [model.conv_last]
    for m in live:
        assert all(p.requires_grad for p in m.parameters())
        assert all(b.training for b in m.modules() if isinstance(b, _BatchNorm))


def test_norm_eval():
    model = ShuffleNetV2Plus(norm_eval=True)
    model.train()
    assert model.training
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))
    assert all(p.requires_grad for p in model.parameters())
    model = ShuffleNetV2(arch='0.5x', norm_eval=False).train()
    assert all(m.training for m in model.modules() if isinstance(m, _BatchNorm))


@pytest.mark.parametrize('name, model', small_models())
def test_with_cp_equal_outputs_and_gradients(name, model):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    kwargs = dict(arch=model.arch_name, layout=model.layout, out_indices=model.out_indices)
    cp_model = type(model)(with_cp=True, **kwargs)
    cp_model.load_state_dict(model.state_dict())
    results = []
    for m in (model, cp_model):
        m.train()
        xi = x.clone().requires_grad_()
        outs = m(xi)
        sum(o.square().mean() for o in outs).backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters()}
        results.append((outs, grads, xi.grad))
    (outs_a, grads_a, xg_a), (outs_b, grads_b, xg_b) = results
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b)
    assert grads_a.keys() == grads_b.keys()
    for n in grads_a:  # every parameter gets a gradient, equal with checkpointing
        torch.testing.assert_close(grads_a[n], grads_b[n], msg=n)
    torch.testing.assert_close(xg_a, xg_b)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('build, words', [
    (lambda: ShuffleNetV2(arch='3.0x'), ["'3.0x'", "'0.5x'", "'2.0x'"]),
    (lambda: ShuffleNetV2(widen_factor=0.75), ['0.75', '0.5', '2.0']),
    (lambda: ShuffleNetV2(arch='1.0x', widen_factor=2.0), ["'1.0x'", '2.0']),
    (lambda: ShuffleNetV2Plus(arch='tiny'), ["'tiny'", "'small'", "'large'"]),
    (lambda: ShuffleNetV2(layout='timm'), ["'timm'", "'megvii'", "'torchvision'"]),
    (lambda: ShuffleNetV2(arch=dict(stage_channels=(117, 232, 464))), ['117', 'even']),
    (lambda: ShuffleNetV2(arch=dict(widths=(116, 232, 464))), ['widths', 'stage_channels']),
    (lambda: ShuffleNetV2(out_indices=(0, 5)), ['(0, 5)', '0..4']),
    (lambda: ShuffleNetV2Plus(out_indices=(-1, )), ['(-1,)', '0..4']),
    (lambda: ShuffleNetV2(frozen_stages=4), ['frozen_stages=4', '-1..3']),
    (lambda: ShuffleNetV2Plus(frozen_stages=-2), ['frozen_stages=-2', '-1..4']),
    (lambda: ShuffleNetV2Plus(arch=dict(stage_channels=(36, 104, 208, 416),
                                        unit_choices=(5, ) * 20)), ['5', '[0, 1, 2, 3]']),
])
def test_bad_arguments_raise(build, words):
    with pytest.raises(ValueError) as info:
        build()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_converter_rejects_wrong_source_and_width():
    torchvision = pytest.importorskip('torchvision')
    tv15 = torchvision.models.shufflenet_v2_x1_5().state_dict()
    with pytest.raises(ValueError, match=r'checkpoint is ShuffleNetV2 1\.5x.*model is '
                                         r'ShuffleNetV2 1\.0x'):
        convert_torchvision_shufflenetv2(tv15, arch='1.0x')
    with pytest.raises(ValueError, match='torchvision ShuffleNetV2.*convert_torchvision'):
        convert_official_shufflenetv2(tv15)
    with pytest.raises(ValueError, match='torchvision ShuffleNetV2'):
        convert_official_shufflenetv2plus(tv15)
    # The converted 1.5x weights do not load into a 1.0x model, nor into the other layout.
    converted = convert_torchvision_shufflenetv2(tv15)
    backbone = {k[len('backbone.'):]: v for k, v in converted.items()
                if k.startswith('backbone.')}
    with pytest.raises(ValueError, match=r'checkpoint is ShuffleNetV2 1\.5x.*model is '
                                         r'ShuffleNetV2 1\.0x'):
        ShuffleNetV2(arch='1.0x', layout='torchvision', out_indices=(4, )).load_state_dict(
            backbone)
    with pytest.raises(ValueError, match="'torchvision' layout.*layout='megvii'"):
        ShuffleNetV2(arch='1.5x', out_indices=(4, )).load_state_dict(backbone)
    ShuffleNetV2(arch='1.5x', layout='torchvision', out_indices=(4, )).load_state_dict(
        backbone)


def test_megvii_converters_reject_each_other():
    v2 = load_fixture('shufflenetv2_1.0x.pth.tar.xz')['state_dict']
    plus = load_fixture('shufflenetv2plus_small.pth.tar.xz')['state_dict']
    with pytest.raises(ValueError, match='ShuffleNetV2\\+ state_dict.*plus'):
        convert_official_shufflenetv2(plus)
    with pytest.raises(ValueError, match='megvii ShuffleNetV2 state_dict'):
        convert_official_shufflenetv2plus(v2)
    with pytest.raises(ValueError, match=r'checkpoint is ShuffleNetV2 1\.0x.*model is '
                                         r'ShuffleNetV2 2\.0x'):
        convert_official_shufflenetv2(v2, arch='2.0x')
    with pytest.raises(ValueError, match='checkpoint is ShuffleNetV2Plus small.*model is '
                                         'ShuffleNetV2Plus medium'):
        convert_official_shufflenetv2plus(plus, arch='medium')
    with pytest.raises(ValueError, match='unit choices'):
        convert_official_shufflenetv2plus(plus, unit_choices=(0, ) * 20)
    # Megvii weights loaded into a torchvision-layout model are refused by name.
    converted = convert_official_shufflenetv2(v2)
    backbone = {k[len('backbone.'):]: v for k, v in converted.items()
                if k.startswith('backbone.')}
    with pytest.raises(ValueError, match="'megvii' layout.*layout='torchvision'"):
        ShuffleNetV2(layout='torchvision', out_indices=(4, )).load_state_dict(backbone)
