"""CondenseNetV2 / CondenseNet backbones and classifiers."""
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmpretrain.apis import init_model
from mmpretrain.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import REPO, fixture_path, load_fixture
from mmsfr.models import CondenseNet, CondenseNetV2
from mmsfr.converters import convert_official_condensenet
from mmsfr.models.layers import condense_model, condensing_layers
from mmsfr.testing import rel_diff

V2_CHANNELS = {'a': (24, 32, 96, 288, 800), 'b': (24, 72, 216, 600, 1176),
               'c': (48, 144, 400, 1040, 2064)}
TINY = dict(depths=(1, 2), growths=(4, 8), groups=2, condense_factor=2, sparse_factor=2,
            hs_from=1, se_from=1, stem_stride=1)


@pytest.mark.parametrize('arch', ['a', 'b', 'c'])
def test_block_channels_match_paper_table(arch):
    model = CondenseNetV2(arch=arch, out_indices=(0, 1, 2, 3, 4))
    assert model.block_channels == V2_CHANNELS[arch]
    assert model.out_strides == (2, 4, 8, 16, 32)


@pytest.mark.parametrize('cls,arch', [(CondenseNetV2, a) for a in ('a', 'b', 'c', 'cifar-110',
                                                                    'cifar-146')] +
                         [(CondenseNet, a) for a in ('a', 'b', 'c', 'v1-g4', 'v1-g8')])
def test_outputs_match_metadata(cls, arch):
    model = cls(arch=arch).eval()
    size = 32 if arch.startswith('cifar') else 64
    with torch.no_grad():
        outs = model(torch.rand(1, 3, size, size))
    assert len(outs) == len(model.out_indices) == len(model.feature_info)
    for out, ch, stride, info in zip(outs, model.out_channels, model.out_strides,
                                     model.feature_info):
        assert out.shape == (1, ch, size // stride, size // stride)
        assert info['num_chs'] == ch and info['reduction'] == stride
    assert list(model.out_channels) == cls.feature_channels(arch)


def test_default_out_indices_are_strides_4_to_32():
    model = CondenseNetV2(arch='c')
    assert model.out_indices == (1, 2, 3, 4) and model.out_strides == (4, 8, 16, 32)


def test_odd_input_size_still_runs():
    model = CondenseNetV2(arch='a').eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 70, 90))
    assert [o.shape[-2:] for o in outs] == [(17, 22), (8, 11), (4, 5), (2, 2)]


@pytest.mark.parametrize('out_norm,normed', [('none', []), ('last', [4]), ('all', [1, 2, 3, 4])])
def test_out_norm_choices(out_norm, normed):
    model = CondenseNetV2(arch='a', out_norm=out_norm).eval()
    assert sorted(int(k) for k in model.norms) == normed
    outs = model(torch.rand(1, 3, 64, 64))
    for i, out in zip(model.out_indices, outs):
        assert (out.min() >= 0) == (i in normed)  # BN + ReLU outputs are non-negative


def test_frozen_stages_and_norm_eval():
    model = CondenseNetV2(arch='a', frozen_stages=2, norm_eval=True)
    model.train()
    assert not any(p.requires_grad for p in model.stem.parameters())
    for i in range(2):
        assert not any(p.requires_grad for p in model.blocks[i].parameters())
        assert not model.blocks[i].training
    assert all(p.requires_grad for p in model.blocks[2].parameters())
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))
    assert model.blocks[2].training  # only the norms are in eval mode


def test_with_cp_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = CondenseNetV2(arch=TINY, out_indices=(0, 1))
    ckpt = CondenseNetV2(arch=TINY, out_indices=(0, 1), with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x1 = torch.rand(2, 3, 16, 16, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    sum(o.sum() for o in plain(x1)).backward()
    sum(o.sum() for o in ckpt(x2)).backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    for (n, p1), p2 in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, msg=n)


def test_every_parameter_gets_a_gradient():
    model = CondenseNetV2(arch=TINY, out_indices=(0, 1), out_norm='all')
    for m in model.modules():  # SFR starts at zero; make it live for this check
        if hasattr(m, 'factor') and hasattr(m, 'norm'):
            m.norm.weight.data.fill_(1)
    sum(o.mean() for o in model(torch.rand(2, 3, 16, 16))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='d'), r"unknown arch 'd'; valid archs are \['a', 'b', 'c', 'cifar-110'"),
    (dict(arch='a', out_indices=(5,)), r'out_indices \(5,\) out of range \(\[5\]\); valid indices are 0..4'),
    (dict(arch='a', frozen_stages=6), r'frozen_stages=6 out of range; valid values are -1..5'),
    (dict(arch='a', out_norm='first'), r"out_norm='first'; choose one of"),
    (dict(arch=dict(TINY, groups=3)), r'groups=3 must be'),
    (dict(arch=dict(depths=(1,), growths=(8, 8), groups=2, condense_factor=2)), 'differ in length'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CondenseNetV2(**kwargs)


def test_condensenet_rejects_sfr():
    with pytest.raises(ValueError, match='use CondenseNetV2'):
        CondenseNet(arch=TINY)


def test_checkpoint_of_another_arch_names_both():
    a = CondenseNetV2(arch='a')
    with pytest.raises(ValueError, match=r"holds arch 'a' .* but the model is arch 'b'"):
        CondenseNetV2(arch='b').load_state_dict(a.state_dict())


def test_converter_answers_at_its_former_address():
    from mmsfr.models.backbones import condensenet
    assert condensenet.convert_official_condensenet is convert_official_condensenet


def test_condensation_to_deploy_is_exact_for_whole_backbone():
    torch.manual_seed(0)
    model = CondenseNetV2(arch='a').eval()
    for layer in condensing_layers(model):
        layer[1].norm.weight.data.uniform_(0.5, 1.5)
    assert condense_model(model, 0.5) == len(condensing_layers(model)) * 7
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.switch_to_deploy()
        after = model(x)
    built = CondenseNetV2(arch='a', deploy=True).eval()
    built.load_state_dict(model.state_dict())  # the deploy form built directly
    with torch.no_grad():
        direct = built(x)
    for b, a, d in zip(before, after, direct):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d, a)


# --------------------------------------------------------------------------- parity
def _classifier(deploy: bool):
    cfg = Config.fromfile(REPO / 'configs/pretrain/condensenetv2/condensenetv2-a_8xb128_in1k.py')
    cfg.model.backbone.deploy = deploy
    return MODELS.build(cfg.model).eval()


@pytest.mark.parametrize('name,deploy,key', [
    ('cdnv2_a_converted.pth.tar.xz', True, 'logits_converted'),
    ('cdnv2_a_unconverted.pth.tar.xz', False, 'logits'),
])
def test_released_weights_reproduce_reference_logits(name, deploy, key):
    expected = load_fixture('cdnv2_a_expected.pth.xz')
    ckpt = load_fixture(name)
    model = _classifier(deploy)
    state = ckpt.get('state_dict_ema', ckpt['state_dict'])
    model.load_state_dict(convert_official_condensenet(state), strict=True)
    with torch.no_grad():
        logits = model(expected['input'], mode='tensor')
    assert rel_diff(logits, expected[key]) <= 1e-4
    if not deploy:  # our own conversion of the unconverted file matches too
        model.backbone.switch_to_deploy()
        with torch.no_grad():
            logits = model(expected['input'], mode='tensor')
        assert rel_diff(logits, expected['logits_converted']) <= 1e-4


def _run_tool(*args):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


def test_official_converter_tool_and_init_model(tmp_path):
    expected = load_fixture('cdnv2_a_expected.pth.xz')
    for name, form, cfg_suffix in (('cdnv2_a_converted.pth.tar.xz', 'deploy', 'deploy_in1k'),
                                   ('cdnv2_a_unconverted.pth.tar.xz', 'train', '8xb128_in1k')):
        src = tmp_path / name.replace('.xz', '')
        import lzma
        src.write_bytes(lzma.open(fixture_path(name)).read())
        dst = tmp_path / f'{form}.pth'
        out = _run_tool('tools/model_converters/official_to_mmsfr.py', '--model',
                        'condensenetv2_a', src, dst)
        assert out.returncode == 0, out.stderr
        assert f'{form} form of condensenetv2_a' in out.stdout
        cfg = REPO / f'configs/pretrain/condensenetv2/condensenetv2-a_{cfg_suffix}.py'
        model = init_model(str(cfg), device='cpu')
        model.load_state_dict(torch.load(dst)['state_dict'], strict=True)
        with torch.no_grad():
            logits = model(expected['input'], mode='tensor')
        key = 'logits_converted' if form == 'deploy' else 'logits'
        assert rel_diff(logits, expected[key]) <= 1e-4
        if form == 'train':  # tools/convert_to_deploy.py on it
            deploy = tmp_path / 'mine_deploy.pth'
            out = _run_tool('tools/convert_to_deploy.py',
                            REPO / 'configs/pretrain/condensenetv2/condensenetv2-a_8xb128_in1k.py',
                            dst, deploy)
            assert out.returncode == 0, out.stderr
            model = init_model(str(REPO / 'configs/pretrain/condensenetv2/'
                                   'condensenetv2-a_deploy_in1k.py'), str(deploy), device='cpu')
            with torch.no_grad():
                logits = model(expected['input'], mode='tensor')
            assert rel_diff(logits, expected['logits_converted']) <= 1e-4


def test_converter_errors(tmp_path):
    bogus = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}}, bogus)
    out = _run_tool('tools/model_converters/official_to_mmsfr.py', '--model', 'condensenetv2_a',
                    bogus, tmp_path / 'out.pth')
    assert out.returncode == 1 and 'not a reference CondenseNet' in out.stderr
    assert not (tmp_path / 'out.pth').exists()
    out = _run_tool('tools/model_converters/official_to_mmsfr.py', '--model', 'condensenetv2_a',
                    bogus, bogus)
    assert out.returncode == 1 and 'refusing to overwrite the input' in out.stderr
    out = _run_tool('tools/model_converters/official_to_mmsfr.py', '--model', 'nope', bogus,
                    tmp_path / 'x.pth')
    assert out.returncode == 2 and 'condensenetv2_a' in out.stderr


def test_convert_to_deploy_refuses_unfinished(tmp_path):
    cfg = REPO / 'configs/pretrain/condensenetv2/condensenetv2-a_8xb128_in1k.py'
    model = init_model(str(cfg), device='cpu')
    condense_model(model, 0.3)
    ckpt = tmp_path / 'half.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    out = _run_tool('tools/convert_to_deploy.py', cfg, ckpt, tmp_path / 'deploy.pth')
    assert out.returncode == 1
    assert 'backbone.blocks.0.0.conv_1 is at condensation stage 4 of 7' in out.stderr
    assert not (tmp_path / 'deploy.pth').exists()


def test_wrong_form_checkpoint_is_named(tmp_path):
    train_cfg = REPO / 'configs/pretrain/condensenetv2/condensenetv2-a_8xb128_in1k.py'
    model = init_model(str(train_cfg), device='cpu')
    ckpt = tmp_path / 'train.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    with pytest.raises(ValueError, match=r'holds the train-time \(masked\) form'):
        init_model(str(REPO / 'configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py'),
                   str(ckpt), device='cpu')


def test_pretrained_init_cfg_loads_backbone_prefix(tmp_path):
    """init_cfg=Pretrained(prefix='backbone.') really loads the classifier's weights."""
    torch.manual_seed(3)
    classifier = _classifier(deploy=False)
    ckpt = tmp_path / 'cls.pth'
    torch.save({'state_dict': classifier.state_dict()}, ckpt)
    backbone = CondenseNetV2(arch='a', init_cfg=dict(type='Pretrained', checkpoint=str(ckpt),
                                                     prefix='backbone.'))
    assert not torch.equal(backbone.stem.weight, classifier.backbone.stem.weight)
    backbone.init_weights()
    for key, value in classifier.backbone.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key


def test_converter_names_both_archs(tmp_path):
    import lzma
    src = tmp_path / 'a.pth.tar'
    src.write_bytes(lzma.open(fixture_path('cdnv2_a_converted.pth.tar.xz')).read())
    out = _run_tool('tools/model_converters/official_to_mmsfr.py', '--model', 'condensenetv2_b',
                    src, tmp_path / 'b.pth')
    assert out.returncode == 1
    assert "holds arch 'a'" in out.stderr and "model is arch 'b'" in out.stderr
    assert not (tmp_path / 'b.pth').exists()
