"""Connectivity matrices (CondenseNetV2 paper, Figs. 6-7) and the plot_connectivity tool."""
from __future__ import annotations

import argparse
import copy
import importlib.util
import lzma
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, fixture_path, load_fixture

from mmsfr.analysis import (block_connectivity, dense_weights, load_dense_state_dict,
                            network_connectivity)
from mmsfr.models import CondenseNet, CondenseNetV2
from mmsfr.models.layers import condense_model

TOOL = REPO / 'tools' / 'analysis_tools' / 'plot_connectivity.py'
NAN = float('nan')
FIELDS = ('group_strength', 'direct', 'reactivation', 'effective')
TINY = dict(depths=(3, ), growths=(4, ), groups=2, condense_factor=2, sparse_factor=2,
            stem_stride=1)


def assert_same(a, b):
    """Two lists of Connectivity agree (NaN where the other has NaN)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.source_labels, x.target_labels) == (y.source_labels, y.target_labels)
        for field in FIELDS:
            u, v = getattr(x, field), getattr(y, field)
            if u is None or v is None:
                assert u is None and v is None, field
            else:
                np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-15, equal_nan=True,
                                           err_msg=field)


def _set_condensed(conv, kept, values, pruned_value=100.0):
    """Mask ``conv`` so group g keeps the channels ``kept[g]`` on its pruned axis.

    ``values(out, in)`` gives each kept weight; pruned weights get ``pruned_value`` (the
    mask must hide them).
    """
    out_c, in_c = conv.conv.weight.shape[:2]
    mask = torch.zeros(out_c, in_c)
    weight = torch.full((out_c, in_c), pruned_value)
    for o in range(out_c):
        for i in range(in_c):
            # LGC: output o is in group o % G; SFR: input i is in group i % G
            g, c = (o % conv.groups, i) if conv.group_axis == 'out' else (i % conv.groups, o)
            if c in kept[g]:
                mask[o, i] = 1
                weight[o, i] = values(o, i)
    conv._mask.copy_(mask[:, :, None, None])
    conv.conv.weight.data.copy_(weight[:, :, None, None])
    conv._stage.fill_(conv.factor - 1)
    conv._count.fill_((conv.factor - 1) * conv._slice)


@pytest.fixture
def known_model():
    """One block of 3 layers (stem 8 channels, k = 4, G = C = S = 2) set by hand.

    Channels: stem 0-7, layer 1 8-11, layer 2 12-15. LGC of layer 3: group 0 reads the
    stem with |w| = 1, group 1 reads layer 1 (|w| = 2) and layer 2 (|w| = 3). Layers 1-2
    read with |w| = 1 (layer 2: group 0 channels 0-5, group 1 channels 6-11). SFR of layer
    1 is 0, of layer 2 is 1 (group 0 -> channels 0-5, group 1 -> 6-11), of layer 3 0.5.
    """
    model = CondenseNetV2(TINY)
    l1, l2, l3 = model.blocks[0]
    with torch.no_grad():
        _set_condensed(l1.conv_1, [range(0, 4), range(4, 8)], lambda o, i: 1.0)
        _set_condensed(l2.conv_1, [range(0, 6), range(6, 12)], lambda o, i: 1.0)
        _set_condensed(l3.conv_1, [range(0, 8), range(8, 16)],
                       lambda o, i: 1.0 if i < 8 else 2.0 if i < 12 else 3.0)
        _set_condensed(l1.sfr, [range(0, 4), range(4, 8)], lambda o, i: 0.0)
        _set_condensed(l2.sfr, [range(0, 6), range(6, 12)], lambda o, i: -1.0)
        _set_condensed(l3.sfr, [range(0, 8), range(8, 16)], lambda o, i: 0.5)
    return model


def test_hand_built_model_gives_the_known_matrices(known_model):
    (conn, ) = block_connectivity(known_model.state_dict())
    assert conn.source_labels == ('stem', '1', '2') and conn.target_labels == ('1', '2', '3')
    # Fig. 6: mean |w| of the kept weights of each filter group (NaN = nothing kept)
    np.testing.assert_array_equal(conn.group_strength, [
        [[1, NAN, NAN], [1, NAN, NAN]],
        [[1, NAN, NAN], [1, 1, NAN]],
        [[1, NAN, NAN], [NAN, 2, 3]],
    ])
    # Fig. 7: mean |w| per (filter, channel), pruned = 0. Layer 3 on the stem: 8 of 16
    # filters x 8 channels at 1 -> 0.5; layer 2 on the stem: 8 x 6 + 8 x 2 ones / 128.
    np.testing.assert_array_equal(conn.direct, [[0.5, NAN, NAN], [0.5, 0.5, NAN],
                                                [0.5, 1.0, 1.5]])
    # SFR of layer t into the channels of source s (|w| per old x new channel)
    np.testing.assert_array_equal(conn.reactivation, [[0, NAN, NAN], [0.5, 0.5, NAN],
                                                      [0.25, 0.25, 0.25]])
    # Layer 2 -> layer 3 through the 12 channels layer 2 reactivates: column L1 of
    # layer 3's LGC (8 on the stem, 16 on layer 1) x row L1 of layer 2's SFR (2), over
    # 16 filters x 4 new channels: (8 * 8 * 2 + 4 * 16 * 2) / 64 = 4. Layer 1's SFR is 0.
    np.testing.assert_array_equal(conn.effective, [[0.5, NAN, NAN], [0.5, 0.5, NAN],
                                                   [0.5, 1.0, 5.5]])
    np.testing.assert_array_equal(conn.via_sfr[2], [0, 0, 4])


def test_hand_built_model_deploy_form_agrees(known_model):
    train = block_connectivity(known_model.state_dict())
    deploy = copy.deepcopy(known_model)
    deploy.switch_to_deploy()
    assert not any(k.endswith('_mask') for k in deploy.state_dict())
    weights = dense_weights(deploy.state_dict())
    assert weights.form == 'deploy' and weights.family == 'CondenseNetV2'
    assert_same(train, block_connectivity(weights))


@pytest.mark.parametrize('cls,arch', [
    (CondenseNetV2, dict(depths=(2, 3), growths=(4, 8), groups=2, condense_factor=2,
                         sparse_factor=4, stem_stride=1)),
    (CondenseNet, dict(depths=(2, 3), growths=(8, 8), groups=4, condense_factor=4,
                       stem_stride=1)),
])
def test_train_and_deploy_forms_give_the_same_matrices(cls, arch):
    torch.manual_seed(0)
    model = cls(arch)
    for p in model.parameters():
        p.data.normal_()
    condense_model(model, 1.0)
    train_sd = model.state_dict()
    deploy = copy.deepcopy(model)
    deploy.switch_to_deploy()
    # classifier-style keys (an mmengine checkpoint's state_dict) and bare backbone keys
    deploy_sd = {f'backbone.{k}': v for k, v in deploy.state_dict().items()}
    deploy_sd['head.fc.weight'] = torch.zeros(3, 3)
    w_train, w_deploy = dense_weights(train_sd), dense_weights(deploy_sd)
    assert (w_train.form, w_deploy.form) == ('train', 'deploy')
    assert w_train.depths == (2, 3) and w_train.growths == tuple(arch['growths'])
    assert w_train.groups == arch['groups'] and w_train.family == cls.__name__
    assert_same(block_connectivity(w_train), block_connectivity(w_deploy))
    assert_same([network_connectivity(w_train)], [network_connectivity(w_deploy)])
    if cls is CondenseNet:
        for conn in block_connectivity(w_train):
            assert conn.reactivation is None
            np.testing.assert_array_equal(conn.effective, conn.direct)


def test_released_converted_and_unconverted_files_agree(tmp_path):
    converted = load_fixture('cdnv2_a_converted.pth.tar.xz')['state_dict']
    path = tmp_path / 'train.pth.tar'  # the training script's file, read as the tool does
    path.write_bytes(lzma.open(fixture_path('cdnv2_a_unconverted.pth.tar.xz')).read())
    ema, source = load_dense_state_dict(path)
    assert source == 'state_dict_ema'
    w_conv = dense_weights(converted)
    w_ema = dense_weights(ema)
    with torch.serialization.safe_globals([argparse.Namespace]):
        ddp = torch.load(path, weights_only=True)['state_dict']  # `module.` keys, no EMA
    w_ddp = dense_weights(ddp)
    assert w_conv.describe() == 'CondenseNetV2-A (deploy form)'
    assert w_ema.describe() == 'CondenseNetV2-A (train form)'
    assert w_ddp.arch_names() == ['condensenetv2-a'] and w_ddp.origin == 'released'
    # The released converted file was made from the EMA weights: identical matrices.
    blocks = block_connectivity(w_conv)
    assert_same(blocks, block_connectivity(w_ema))
    assert_same([network_connectivity(w_conv)], [network_connectivity(w_ema)])
    # Structure: layer t reads sources < t only; each group keeps 1/C of the channels.
    for conn, depth in zip(blocks, (1, 1, 4, 6, 8)):
        assert conn.direct.shape == (depth, depth)
        readable = np.tril(np.ones((depth, depth), bool))
        assert np.array_equal(np.isfinite(conn.direct), readable)
        assert np.array_equal(np.isfinite(conn.reactivation), readable)
        assert (conn.direct[readable] > 0).all()
        np.testing.assert_array_equal(conn.effective[:, 0], conn.direct[:, 0])
        assert (conn.via_sfr[readable] >= 0).all()
        # every filter group reads something
        assert np.isfinite(conn.group_strength).any(axis=2).all()


def test_network_matrices_contain_the_block_matrices():
    weights = dense_weights(load_fixture('cdnv2_a_converted.pth.tar.xz')['state_dict'])
    net = network_connectivity(weights)
    assert net.source_labels[:4] == ('stem', '1.1', '2.1', '3.1')
    assert net.target_labels[-1] == '5.8' and net.direct.shape == (20, 20)
    # Block 4 (layers 4.1-4.6) reading its own layers: same channels, same numbers.
    block = block_connectivity(weights)[3]
    t0 = net.target_labels.index('4.1')
    s0 = net.source_labels.index('4.1')
    for field in ('direct', 'reactivation', 'effective'):
        np.testing.assert_allclose(getattr(net, field)[t0 + 1:t0 + 6, s0:s0 + 5],
                                   getattr(block, field)[1:, 1:], equal_nan=True)
    # Layer 5.1 reads channels of the stem directly (full dense connectivity).
    assert net.direct[net.target_labels.index('5.1'), 0] > 0


def test_stem_width_can_be_given_when_the_stem_is_missing():
    sd = CondenseNetV2('a').state_dict()
    del sd['stem.weight']
    with pytest.raises(ValueError, match='cannot infer the first block'):
        dense_weights(sd)
    assert dense_weights(sd, stem_channels=16).block_in_channels == (16, 24, 32, 96, 288)


def test_not_a_dense_network_is_named():
    with pytest.raises(ValueError, match=r"not a CondenseNet / CondenseNetV2 checkpoint: "
                       r"found 2 entries such as 'conv1.weight'.*supported: mmsfr"):
        dense_weights({'conv1.weight': torch.zeros(1), 'fc.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match='SFR ShuffleNet'):
        dense_weights({'stages.0.1.sfr._mask': torch.zeros(1)})


def _png_ok(path, size):
    from matplotlib.image import imread
    image = imread(path)
    assert image.shape[:2] == size[::-1], (path.name, image.shape)
    rgb = image[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 50  # a rendered heatmap, not one colour
    assert (rgb.std(axis=1) > 0.1).mean() > 0.05  # coloured cells, not just text


def test_tool_renders_the_released_fixture(tmp_path):
    ckpt = tmp_path / 'condensenetv2_a_converted.pth.tar'
    ckpt.write_bytes(lzma.open(fixture_path('cdnv2_a_converted.pth.tar.xz')).read())
    out = tmp_path / 'plots'
    run = subprocess.run([sys.executable, str(TOOL), str(ckpt), '--out', str(out), '--dpi',
                          '40'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'CondenseNetV2-A (deploy form)' in run.stdout
    # fixed figure sizes (inches) x dpi 40: groups 16 x 4.5, layers 16 x 3 * 3.5,
    # network 18 x 6
    for kind, size in (('groups', (640, 180)), ('layers', (640, 420)),
                       ('network', (720, 240))):
        path = out / f'connectivity_{kind}.png'
        assert f'wrote {path} ({size[0]} x {size[1]} px)' in run.stdout
        _png_ok(path, size)


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('plot_connectivity', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_plots_a_condensenet_mmengine_checkpoint(tool, tmp_path, capsys):
    model = CondenseNet(dict(depths=(2, 3), growths=(8, 8), groups=4, condense_factor=4,
                             stem_stride=1))
    condense_model(model, 1.0)
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1},
                'state_dict': {f'backbone.{k}': v for k, v in model.state_dict().items()}},
               ckpt)
    assert tool.main([str(ckpt), '--out', str(tmp_path), '--kind', 'layers', 'network',
                      '--dpi', '20']) == 0
    assert 'CondenseNet (custom: depths [2, 3], growths [8, 8], G=4) (train form)' in \
        capsys.readouterr().out
    _png_ok(tmp_path / 'connectivity_layers.png', (320, 70))  # one row of panels
    _png_ok(tmp_path / 'connectivity_network.png', (140, 120))
    assert not (tmp_path / 'connectivity_groups.png').exists()


def test_tool_errors(tool, tmp_path, capsys):
    ckpt = tmp_path / 'cdnv2_a.pth'
    torch.save({'state_dict': CondenseNetV2('a').state_dict()}, ckpt)

    assert tool.main([str(tmp_path / 'missing.pth'), '--out', str(tmp_path)]) == 1
    assert 'error: checkpoint not found: ' in capsys.readouterr().err

    resnet = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}}, resnet)
    assert tool.main([str(resnet), '--out', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not a CondenseNet / CondenseNetV2 checkpoint" in err and "'conv1.weight'" in err

    text = tmp_path / 'notes.txt'
    text.write_text('hello')
    assert tool.main([str(text), '--out', str(tmp_path)]) == 1
    assert 'cannot read it as a torch checkpoint' in capsys.readouterr().err

    assert tool.main([str(ckpt), '--out', str(text / 'plots')]) == 1  # parent is a file
    assert 'cannot write to --out' in capsys.readouterr().err
    assert tool.main([str(ckpt), '--out', str(text)]) == 1
    assert 'exists and is not a directory' in capsys.readouterr().err

    assert tool.main([str(ckpt), '--out', str(tmp_path), '--arch', 'condensenet-a']) == 1
    err = capsys.readouterr().err
    assert 'holds a CondenseNetV2 with depths [1, 1, 4, 6, 8]' in err
    assert "it matches ['condensenetv2-a']" in err

    with pytest.raises(SystemExit) as exc:
        tool.main([str(ckpt), '--out', str(tmp_path), '--arch', 'resnet50'])
    assert exc.value.code == 2
    assert "'condensenetv2-a'" in capsys.readouterr().err
    assert not list(tmp_path.glob('*.png'))
