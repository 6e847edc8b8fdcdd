"""Deploy conversion refuses, naming the layer, whatever it could not convert exactly.

A train-time checkpoint whose LGC/SFR masks lack the group structure condensation gives
them used to convert silently and wrongly (rows of a group permuted) or die with a bare
size error (all ones while the counters say condensation is done). Conversion now
checks every mask's structure, compares each converted layer and the whole model with
the train-time form on a random input, and writes nothing unless all are exact.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from conftest import DIGITS_TRAIN_CFG, REPO, without_warnings
from mmsfr.apis import build_model, deploy_checkpoint
from mmsfr.models import condense_model
from mmsfr.models.deploy import Deployable
from mmsfr.models.layers import LearnedGroupConv

TRAIN_CFG = DIGITS_TRAIN_CFG
LAYER = 'backbone.blocks.0.0.conv_1'


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('convert_to_deploy_tool',
                                                  REPO / 'tools/convert_to_deploy.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def condensed_state():
    torch.manual_seed(0)
    model = build_model(TRAIN_CFG)
    condense_model(model, 1.0)
    return model.state_dict()


def _convert(tool, capsys, state, tmp_path):
    ckpt, out = tmp_path / 'train.pth', tmp_path / 'deploy.pth'
    torch.save({'state_dict': state}, ckpt)
    code = tool.main([str(TRAIN_CFG), str(ckpt), str(out)])
    return code, capsys.readouterr(), out


def test_intact_checkpoint_converts_exactly(tool, capsys, condensed_state, tmp_path):
    code, captured, out = _convert(tool, capsys, condensed_state, tmp_path)
    assert code == 0, captured.err
    assert out.exists() and 'wrote' in captured.out


def test_permuted_rows_of_a_group_are_refused_by_name(tool, capsys, condensed_state, tmp_path):
    state = dict(condensed_state)
    mask = state[f'{LAYER}._mask'].clone()  # LGC: row r (output) is in group r % G
    groups = 4
    rows = mask[:, :, 0, 0]
    other = next(r for r in range(1, groups) if not torch.equal(rows[0], rows[r]))
    mask[[0, other]] = mask[[other, 0]]  # two groups swap one row each
    state[f'{LAYER}._mask'] = mask
    code, captured, out = _convert(tool, capsys, state, tmp_path)
    assert code == 1 and not out.exists()
    lines = without_warnings(captured.err)
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    err = lines[0]
    assert f'LearnedGroupConv {LAYER}: its mask gives rows of one group different channels' \
        in err and f'{out} was not written' in err


def test_full_mask_with_finished_counters_is_refused_by_name(tool, capsys, condensed_state,
                                                             tmp_path):
    state = dict(condensed_state)
    state[f'{LAYER}._mask'] = torch.ones_like(state[f'{LAYER}._mask'])
    code, captured, out = _convert(tool, capsys, state, tmp_path)
    assert code == 1 and not out.exists()
    lines = without_warnings(captured.err)
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    err = lines[0]
    assert f'LearnedGroupConv {LAYER}: its mask keeps [16] channels per group where stage 3 ' \
        '(factor 4) means 4' in err


def test_inexact_layer_conversion_is_refused_by_name(condensed_state, tmp_path, monkeypatch):
    original = LearnedGroupConv._fill_deploy

    def off_by_a_bit(self, norm, weight, kept):
        original(self, norm, weight, kept)
        self.conv.weight.data[0] *= 1.05

    monkeypatch.setattr(LearnedGroupConv, '_fill_deploy', off_by_a_bit)
    model = build_model(TRAIN_CFG)
    model.load_state_dict(condensed_state)
    out = tmp_path / 'deploy.pth'
    with pytest.raises(ValueError, match=f'LearnedGroupConv {LAYER}: the deploy form differs '
                       'from the train-time form on a random input'):
        deploy_checkpoint(model, out)
    assert not out.exists()


class _BadFold(Deployable, nn.Module):
    """A module whose deploy form (its ``convert_own_parts``) is not exact."""

    def __init__(self):
        super().__init__()
        self.deploy = False
        self.conv = nn.Conv2d(3, 4, 3)

    def convert_own_parts(self, name=''):
        with torch.no_grad():
            self.conv.weight.mul_(1.025)
        self.deploy = True

    def forward(self, x):
        return self.conv(x)


def test_inexact_model_conversion_is_refused(tmp_path):
    out = tmp_path / 'deploy.pth'
    with pytest.raises(ValueError, match=r'the converted _BadFold: the deploy form differs '
                       r'.*nothing was written'):
        deploy_checkpoint(_BadFold(), out)
    assert not out.exists()


def test_shufflenet_fold_passes_the_model_check(tmp_path):
    from mmsfr.models import ShuffleNetV2
    from mmsfr.testing import randomise_bn
    model = ShuffleNetV2(arch='0.5x')
    randomise_bn(model)
    out = tmp_path / 'deploy.pth'
    deploy_checkpoint(model, out)
    assert out.exists() and torch.load(out)['meta']['form'] == 'deploy'
