"""Backbone arguments users get wrong: ``out_indices`` order and shape, mismatched
pretrained weights. Every family behaves the same way."""
from __future__ import annotations

import pytest
import torch

from mmsfr.models import (CondenseNet, CondenseNetV2, SFRShuffleNetV2, SFRShuffleNetV2Plus,
                          ShuffleNetV2, ShuffleNetV2Plus)

TINY = dict(depths=(1, 1, 1, 1), growths=(4, 4, 8, 8), groups=2, condense_factor=2,
            sparse_factor=2)

# (class, kwargs, number of levels)
FAMILIES = [
    (CondenseNetV2, dict(arch=TINY), 4),
    (CondenseNet, dict(arch=dict(TINY, sparse_factor=None)), 4),
    (ShuffleNetV2, dict(arch='0.5x'), 5),
    (ShuffleNetV2Plus, dict(arch='small'), 5),
    (SFRShuffleNetV2, dict(arch='0.5x'), 5),
    (SFRShuffleNetV2Plus, dict(arch='small'), 5),
]
IDS = [cls.__name__ for cls, _, _ in FAMILIES]


@pytest.mark.parametrize('cls,kwargs,levels', FAMILIES, ids=IDS)
def test_outputs_follow_the_given_order(cls, kwargs, levels):
    ascending = cls(out_indices=(1, levels - 1), **kwargs).eval()
    reverse = cls(out_indices=(levels - 1, 1), **kwargs).eval()
    reverse.load_state_dict(ascending.state_dict())
    assert reverse.out_channels == ascending.out_channels[::-1]
    assert [f['num_chs'] for f in reverse.feature_info] == list(reverse.out_channels)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        low, high = ascending(x)
        outs = reverse(x)
    assert len(outs) == len(reverse.out_channels) == 2
    assert [o.shape[1] for o in outs] == list(reverse.out_channels)
    torch.testing.assert_close(outs[0], high)
    torch.testing.assert_close(outs[1], low)


@pytest.mark.parametrize('cls,kwargs,levels', FAMILIES, ids=IDS)
@pytest.mark.parametrize('bad,match', [
    ((2, 2), r'out_indices \(2, 2\) repeats \[2\]'),
    ((), r'out_indices must be a non-empty sequence of ints .* got \(\)'),
    (3, r'out_indices must be a non-empty sequence of ints .* got 3'),
    ((1.0,), r'out_indices must be a non-empty sequence of ints .* got \(1.0,\)'),
    ((9,), r'out_indices \(9,\) out of range \(\[9\]\); valid indices are 0\.\.'),
    ((-1,), r'out_indices \(-1,\) out of range \(\[-1\]\)'),
])
def test_bad_out_indices_get_one_clear_error(cls, kwargs, levels, bad, match):
    with pytest.raises(ValueError, match=match):
        cls(out_indices=bad, **kwargs)


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


@pytest.mark.parametrize('cls,kwargs,other', [
    (CondenseNetV2, dict(arch='a'), ShuffleNetV2(arch='0.5x')),
    (ShuffleNetV2, dict(arch='0.5x'), CondenseNetV2(arch='a')),
    (SFRShuffleNetV2Plus, dict(arch='small'), CondenseNet(arch='a')),
], ids=['cdnv2<-shufflenet', 'shufflenet<-cdnv2', 'sfrplus<-condensenet'])
def test_pretrained_weights_of_another_family_are_refused(tmp_path, cls, kwargs, other):
    path = _save({'state_dict': other.state_dict()}, tmp_path / 'other.pth')
    model = cls(init_cfg=dict(type='Pretrained', checkpoint=path), **kwargs)
    with pytest.raises(ValueError, match=rf'{path}: no weight of this checkpoint fits '
                                         rf'{cls.__name__} \(expected {cls.__name__} keys'):
        model.init_weights()


def test_whole_model_checkpoint_without_prefix_gets_a_hint(tmp_path):
    source = CondenseNetV2(arch='a')
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    path = _save({'state_dict': state}, tmp_path / 'detector.pth')
    model = CondenseNetV2(arch='a', init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match=r"add prefix='backbone\.' to init_cfg"):
        model.init_weights()
    fixed = CondenseNetV2(arch='a', init_cfg=dict(type='Pretrained', checkpoint=path,
                                                  prefix='backbone.'))
    fixed.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(fixed.state_dict()[key], value), key


def test_pretrained_weights_of_the_family_still_load(tmp_path):
    source = ShuffleNetV2(arch='0.5x')
    path = _save({'state_dict': source.state_dict()}, tmp_path / 'same.pth')
    model = ShuffleNetV2(arch='0.5x', init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
