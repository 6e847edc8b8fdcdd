"""Complexity counting (both conventions) and tools/analysis_tools/get_flops.py.

Reference numbers: docs of the CondenseNet / CondenseNetV2 papers and the counts of
the reference structures (conv + linear multiply-adds), at 224x224, deploy form.
"""
from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.registry import init_default_scope
from torch import nn

import mmsfr  # noqa: F401
from mmsfr.analysis import (ComplexityCounter, count_complexity, count_mmengine,
                            count_params, format_count, to_deploy_form)
from mmsfr.models import CondenseNet, CondenseNetV2
from mmsfr.models.layers import condense_model, condensing_layers

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'analysis_tools' / 'get_flops.py'
M = 1e6


def rel(value: float, target: float) -> float:
    return abs(value - target) / target


def v2_classifier_cfg(arch: str) -> dict:
    return dict(type='ImageClassifier',
                backbone=dict(type='CondenseNetV2', arch=arch, out_indices=(4, ),
                              deploy=True),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='CondenseNetV2ClsHead', num_classes=1000,
                          in_channels=CondenseNetV2.feature_channels(arch, (4, ))[0],
                          mid_channels=828 if arch == 'a' else 1024))


def v1_classifier_cfg(arch: str) -> dict:
    return dict(type='ImageClassifier',
                backbone=dict(type='CondenseNet', arch=arch, out_indices=(4, ),
                              deploy=True),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=1000,
                          in_channels=CondenseNet.feature_channels(arch, (4, ))[0]))


def build(cfg: dict) -> nn.Module:
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS.build(cfg)


def build_v2(arch: str) -> nn.Module:
    # CondenseNetV2-B's tail SE has 1176 // 16 = 73 hidden units, as in the reference.
    return build(v2_classifier_cfg(arch))


# ------------------------------------------------------------------ CondenseNetV2
# arch: conv+linear MACs (1%), paper FLOPs (3%), params without BN (3%)
V2_EXPECTED = {
    'a': (43.1 * M, 46 * M, 2.0 * M),
    'b': (140.5 * M, 146 * M, 3.6 * M),
    'c': (295.8 * M, 309 * M, 6.1 * M),
}


@pytest.mark.parametrize('arch', sorted(V2_EXPECTED))
def test_condensenetv2_classifier_counts(arch: str) -> None:
    macs, flops, params = V2_EXPECTED[arch]
    counts = count_complexity(build_v2(arch), (3, 224, 224))
    assert rel(counts['conv_linear_macs'], macs) < 0.01, counts
    assert rel(counts['paper_flops'], flops) < 0.03, counts
    assert rel(counts['params_no_bn'], params) < 0.03, counts
    assert counts['paper_flops'] == (counts['conv_linear_macs'] + counts['act_ops'] +
                                     counts['pool_ops'])
    assert counts['params'] > counts['params_no_bn']


# ------------------------------------------------------------------ CondenseNet
# arch: conv+linear MACs (1%), paper FLOPs (3%), (paper params, classifier form)
V1_EXPECTED = {
    'a': (51.0 * M, 56 * M, (0.9 * M, 'dense')),
    'b': (125.8 * M, 132 * M, (2.1 * M, 'dense')),
    'c': (261.5 * M, 274 * M, (2.9 * M, 'condensed')),
    'v1-g4': (516.6 * M, 529 * M, (4.8 * M, 'condensed')),
    'v1-g8': (261.5 * M, 274 * M, (2.9 * M, 'condensed')),
}


@pytest.mark.parametrize('arch', list(V1_EXPECTED))
def test_condensenet_classifier_counts(arch: str) -> None:
    """CondenseNet with mmpretrain's dense ``LinearClsHead``.

    The reference deploy form also condenses the classifier to 50% of its inputs, so
    its counts are ours minus half of the classifier's MACs / weights. The reference
    MAC counts all assume that condensed classifier; the papers' parameter counts use
    a dense classifier for CondenseNet-A/B (V2 supplement) and a condensed one for
    CondenseNet-C / v1 (CondenseNet paper).
    """
    macs, flops, (params, fc_form) = V1_EXPECTED[arch]
    model = build(v1_classifier_cfg(arch))
    counts = count_complexity(model, (3, 224, 224))
    half_fc = model.head.fc.weight.numel() // 2  # MACs == weights for the classifier
    assert rel(counts['conv_linear_macs'] - half_fc, macs) < 0.01, counts
    # Dense head: within 1.5% of the reference too (the classifier is small).
    assert rel(counts['conv_linear_macs'], macs) < 0.015, counts
    for paper_flops in (counts['paper_flops'], counts['paper_flops'] - half_fc):
        assert rel(paper_flops, flops) < 0.03, counts
    ours = counts['params_no_bn'] - (half_fc if fc_form == 'condensed' else 0)
    assert rel(ours, params) < 0.03, (counts, fc_form)


@pytest.mark.parametrize('arch', list(V1_EXPECTED))
def test_condensenet_with_condensing_head(arch: str) -> None:
    """With mmsfr's ``CondenseNetClsHead`` (50% classifier) the reference counts hold
    directly."""
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    if MODELS.get('CondenseNetClsHead') is None:
        pytest.skip('CondenseNetClsHead is not available')
    macs, flops, (params, fc_form) = V1_EXPECTED[arch]
    cfg = v1_classifier_cfg(arch)
    cfg['head'] = dict(cfg['head'], type='CondenseNetClsHead')  # train-time classifier
    counts = count_complexity(build(cfg), (3, 224, 224))  # counted as the deploy form
    assert rel(counts['conv_linear_macs'], macs) < 0.01, counts
    assert rel(counts['paper_flops'], flops) < 0.03, counts
    if fc_form == 'condensed':
        assert rel(counts['params_no_bn'], params) < 0.03, counts


# ------------------------------------------------------------------ counting rules
def test_counter_sees_functional_ops() -> None:
    x = torch.rand(1, 4, 8, 8)
    w = torch.rand(6, 2, 3, 3)
    with torch.no_grad(), ComplexityCounter() as counter:
        y = nn.functional.conv2d(x, w, padding=1, groups=2)  # 6*8*8 * 2*9 = 6912
        y = torch.relu(y) + nn.functional.hardswish(y)  # 384 + 384
        y = torch.sigmoid(y)  # 2 * 384
        y = nn.functional.avg_pool2d(y, 2, 2)  # 6*4*4 * 4 = 384
        v = y.mean((2, 3))  # global pool: 96
        nn.functional.linear(v, torch.rand(10, 6), torch.rand(10))  # 60
        nn.functional.max_pool2d(y, 2)  # not counted (reference)
    assert counter.conv_linear_macs == 6912 + 60
    assert counter.act_ops == 384 + 384 + 2 * 384
    assert counter.pool_ops == 384 + 96
    assert counter.paper_flops == 6912 + 60 + 1536 + 480


def test_count_params_excludes_bn() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Linear(4, 2))
    assert count_params(net) == {'params': 16 + 8 + 10, 'params_no_bn': 26}


def test_train_time_model_counted_as_deploy_form() -> None:
    deployed = CondenseNetV2(arch='a', out_indices=(4, ), deploy=True)
    expected = count_complexity(deployed)
    masked = CondenseNetV2(arch='a', out_indices=(4, ))  # not condensed at all
    assert count_complexity(masked) == expected
    condense_model(masked, 0.2)  # partly condensed
    assert count_complexity(masked) == expected
    # The original is untouched; the deploy copy is converted.
    assert not any(layer.deploy for _, layer in condensing_layers(masked))
    assert masked.training
    assert all(layer.deploy for _, layer in condensing_layers(to_deploy_form(masked)))
    assert to_deploy_form(deployed) is deployed
    # Counted as it runs: dense masked 1x1 convs cost C = 8 times more.
    dense = count_complexity(masked, as_deploy=False)
    lgc_sfr = dense['conv_linear_macs'] - expected['conv_linear_macs']
    assert lgc_sfr > 0 and lgc_sfr % 7 == 0
    assert dense['act_ops'] == expected['act_ops']


def test_condensed_model_converts_exactly() -> None:
    arch = dict(depths=(2, 3), growths=(8, 16), groups=4, condense_factor=4)
    model = CondenseNet(arch=arch, out_indices=(1, ))
    condense_model(model, 1.0)
    reference = copy.deepcopy(model)
    counts = count_complexity(model, (3, 64, 64))
    reference.switch_to_deploy()
    assert counts == count_complexity(reference, (3, 64, 64))


def test_mmengine_count_next_to_ours() -> None:
    model = build_v2('a')
    ours = count_complexity(model)
    theirs = count_mmengine(model)
    assert theirs['params'] == ours['params']
    assert theirs['flops'] > theirs['flops_no_bn']  # mmengine counts BatchNorm
    assert rel(theirs['flops_no_bn'], ours['conv_linear_macs']) < 0.01


def test_format_count() -> None:
    assert format_count(43.14e6) == '43.14M'
    assert format_count(2.5e9) == '2.50G'
    assert format_count(1.5e9, 'M', 1) == '1500.0M'


# ------------------------------------------------------------------ the tool
def load_tool():
    spec = importlib.util.spec_from_file_location('get_flops', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_config(path: Path, model: dict, scope: str = 'mmpretrain', base: str = '') -> Path:
    lines = [f'default_scope = {scope!r}',
             "custom_imports = dict(imports=['mmsfr'], allow_failed_imports=False)"]
    if base:
        lines.append(f'_base_ = {base!r}')
    lines.append(f'model = {model!r}')
    path.write_text('\n'.join(lines) + '\n')
    return path


def test_get_flops_help() -> None:
    result = subprocess.run([sys.executable, str(TOOL), '--help'], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0
    assert '--shape' in result.stdout and 'example' in result.stdout


def test_get_flops_classifier_subprocess(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / 'cdnv2_a.py', v2_classifier_cfg('a'))
    result = subprocess.run([sys.executable, str(TOOL), str(cfg), '--shape', '224'],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'input 1x3x224x224' in out
    assert '43.14M' in out  # conv + linear MACs
    assert '45.87M' in out  # paper convention
    assert '2.02M' in out  # params without BN
    assert 'mmengine FLOPs (with BN)' in out and 'failed' not in out


def test_get_flops_cfg_options_and_as_is(tmp_path: Path, capsys) -> None:
    tool = load_tool()
    cfg = write_config(tmp_path / 'cn.py', v1_classifier_cfg('a'))
    assert tool.main([str(cfg), '--no-mmengine', '--cfg-options',
                      'model.backbone.deploy=False']) == 0
    out = capsys.readouterr().out
    assert '(deploy form)' in out and '51.35M' in out and 'skipped' in out
    assert tool.main([str(cfg), '--no-mmengine', '--as-is', '--cfg-options',
                      'model.backbone.deploy=False']) == 0
    out = capsys.readouterr().out
    assert '(as built)' in out and '51.35M' not in out
    with pytest.raises(SystemExit):
        tool.parse_args([str(cfg), '--shape', '1', '2', '3'])


def test_get_flops_detector(tmp_path: Path) -> None:
    model = dict(
        backbone=dict(_delete_=True, type='CondenseNetV2', arch='a',
                      out_indices=(1, 2, 3, 4), deploy=True),
        neck=dict(in_channels=CondenseNetV2.feature_channels('a')))
    cfg = write_config(tmp_path / 'det.py', model, scope='mmdet',
                       base='mmdet::_base_/models/retinanet_r50_fpn.py')
    result = subprocess.run([sys.executable, str(TOOL), str(cfg), '--shape', '120', '150'],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'RetinaNet (deploy form), input 1x3x128x160' in out  # padded to 32
    assert 'mmengine FLOPs (with BN)' in out and 'failed' not in out
    # The whole detector is counted: far more than the backbone alone.
    backbone = count_complexity(CondenseNetV2(arch='a'), (3, 128, 160))
    line = next(ln for ln in out.splitlines() if ln.startswith('conv+linear MACs'))
    value, unit = float(line.split()[-1][:-1]), line.split()[-1][-1]
    assert value * {'M': 1e6, 'G': 1e9}[unit] > 5 * backbone['conv_linear_macs']
