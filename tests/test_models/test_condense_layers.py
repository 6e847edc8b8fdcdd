"""LGC / SFR layers: schedule, pruning criteria, exact deploy conversion."""
import pytest
import torch
from torch import nn

from conftest import randomise_bn
from mmsfr.models.layers import (LearnedGroupConv, SparseFeatureReactivation,
                                 condensation_stage, convert_to_deploy)




def test_schedule_stages():
    assert [condensation_stage(p, 8) for p in (0, 0.07, 0.0715, 0.25, 0.49, 0.5, 1.0)] == \
        [0, 0, 1, 3, 6, 7, 7]
    assert condensation_stage(0.3, 1) == 0
    with pytest.raises(ValueError, match='factor'):
        condensation_stage(0.1, 0)


@pytest.mark.parametrize('cls,args', [(LearnedGroupConv, (32, 16)),
                                      (SparseFeatureReactivation, (8, 32))])
def test_skipped_stages_are_all_pruned(cls, args):
    torch.manual_seed(0)
    stepwise = cls(*args, groups=4, factor=4)
    jump = cls(*args, groups=4, factor=4)
    jump.load_state_dict(stepwise.state_dict())
    for p in (0.17, 0.34, 0.5):  # stage by stage
        assert stepwise.condense(p) == 1
    assert jump.condense(0.9) == 3  # all three at once
    assert torch.equal(stepwise._mask, jump._mask)
    assert jump.stage == 3 and jump.fully_condensed
    assert jump.condense(1.0) == 0  # nothing left to do


def test_lgc_keeps_strongest_inputs_per_group():
    lgc = LearnedGroupConv(8, 4, groups=2, factor=2)
    w = torch.full((4, 8, 1, 1), 0.01)
    w[0::2, :4] = 1.0  # group 0 (filters 0, 2) relies on inputs 0-3
    w[1::2, 4:] = 1.0  # group 1 (filters 1, 3) on inputs 4-7
    lgc.conv.weight.data.copy_(w)
    lgc.condense(0.5)
    mask = lgc._mask[:, :, 0, 0]
    assert mask[0::2].eq(torch.tensor([1, 1, 1, 1, 0, 0, 0, 0.])).all()
    assert mask[1::2].eq(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1.])).all()


def test_sfr_keeps_strongest_outputs_per_group_max_over_kernel():
    sfr = SparseFeatureReactivation(4, 6, kernel_size=3, groups=2, factor=3)
    w = torch.full((6, 4, 3, 3), 0.01)
    w[5, 0::2, 1, 1] = 2.0  # group 0 (inputs 0, 2) reactivates channels 5 and 1
    w[1, 0::2, 0, 0] = 1.0  # a single strong tap counts (max over the kernel)
    w[3, 1::2] = 0.5  # group 1 (inputs 1, 3): channels 3 and 0
    w[0, 1::2, 2, 2] = 0.9
    sfr.conv.weight.data.copy_(w)
    sfr.condense(0.5)
    kept = sfr.kept_channels()
    assert kept[0].tolist() == [1, 5] and kept[1].tolist() == [0, 3]
    density = sfr._mask[:, :, 0, 0].mean().item()
    assert density == pytest.approx(1 / 3)


@pytest.mark.parametrize('kernel_size', [1, 3])
@pytest.mark.parametrize('groups,factor', [(4, 4), (2, 4), (4, 2)])
def test_deploy_conversion_is_exact(kernel_size, groups, factor):
    torch.manual_seed(1)
    lgc = LearnedGroupConv(16, 8, kernel_size=1, groups=groups, factor=factor,
                           act_cfg=dict(type='HSwish'))
    sfr = SparseFeatureReactivation(8, 16, kernel_size=kernel_size, groups=groups,
                                    factor=factor)
    model = nn.ModuleDict(dict(lgc=lgc, sfr=sfr))
    randomise_bn(model)
    for layer in (lgc, sfr):
        layer.conv.weight.data.normal_()
        layer.condense(0.5)
    model.eval()
    x, old = torch.randn(2, 16, 9, 7), torch.randn(2, 16, 9, 7)
    with torch.no_grad():
        before = sfr(lgc(x), old)
        convert_to_deploy(model)
        after = sfr(lgc(x), old)
    assert lgc.deploy and sfr.deploy and not hasattr(sfr, '_mask')
    assert sfr.index.dtype == torch.long and sfr.index.numel() == groups * 16 // factor
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_unfinished_condensation_is_refused_and_model_untouched():
    model = nn.Sequential(LearnedGroupConv(8, 8, groups=4, factor=4),
                          LearnedGroupConv(8, 8, groups=4, factor=4))
    model[0].condense(0.5)
    model[1].condense(0.2)
    with pytest.raises(RuntimeError, match=r'LearnedGroupConv 1 is at condensation stage 1 of 3'):
        convert_to_deploy(model)
    assert not model[0].deploy and hasattr(model[0], '_mask')


def test_state_dict_holds_masks_and_counters():
    a = SparseFeatureReactivation(8, 16, groups=4, factor=4)
    a.condense(0.2)
    sd = a.state_dict()
    assert {'_mask', '_stage', '_count'} <= set(sd)
    b = SparseFeatureReactivation(8, 16, groups=4, factor=4)
    b.load_state_dict(sd)
    assert b.stage == 1 and torch.equal(b._mask, a._mask)
    b.condense(0.5), a.condense(0.5)
    assert torch.equal(b._mask, a._mask)


def test_form_and_factor_mismatch_on_load():
    train = LearnedGroupConv(8, 8, groups=4, factor=4)
    train.condense(0.5)
    deploy = LearnedGroupConv(8, 8, groups=4, factor=4, deploy=True)
    with pytest.raises(ValueError, match='train-time .masked. form but the model is built in its deploy'):
        deploy.load_state_dict(train.state_dict())
    converted = LearnedGroupConv(8, 8, groups=4, factor=4)
    converted.condense(0.5)
    converted.switch_to_deploy()
    with pytest.raises(ValueError, match='deploy .converted. form'):
        LearnedGroupConv(8, 8, groups=4, factor=4).load_state_dict(converted.state_dict())
    other = LearnedGroupConv(8, 8, groups=4, factor=2)
    with pytest.raises(ValueError, match='does not fit factor=2'):
        other.load_state_dict(train.state_dict())


@pytest.mark.parametrize('kwargs,match', [
    (dict(in_channels=8, out_channels=10, groups=4, factor=2), 'groups=4 must be'),
    (dict(in_channels=8, out_channels=8, groups=4, factor=3), 'factor=3 must be'),
])
def test_bad_group_or_factor(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LearnedGroupConv(**kwargs)


@pytest.mark.parametrize('kind', ['repeats', 'identity', 'one channel', 'reversed'])
def test_scatter_rounds_add_like_index_add_with_distinct_targets(kind):
    """The SFR's export form (rounds of scatter-adds with distinct targets, on rows of
    (N * C, H * W)) gives index_add's sums for any index, repeats included."""
    from mmsfr.models.layers.condense import scatter_add_rounds, scatter_rounds
    g = torch.Generator().manual_seed(0)
    channels, n = 12, 20
    index = {'repeats': torch.randint(0, channels, (n,), generator=g),
             'identity': torch.arange(channels),
             'one channel': torch.full((n,), 3),
             'reversed': torch.arange(channels).flip(0)}[kind]
    rounds = scatter_rounds(index)
    rows = [p for positions, _ in rounds
            for p in (range(len(index)) if positions is None else positions)]
    assert sorted(rows) == list(range(len(index)))  # every row once
    for positions, targets in rounds:
        assert len(set(targets)) == len(targets)  # distinct: no race in a parallel scatter
        picked = range(len(index)) if positions is None else positions
        assert [index[p].item() for p in picked] == targets
        assert targets != list(range(channels))  # not the in-order cover (see the docstring)
    assert len(rounds) == max(index.bincount().tolist())
    old = torch.randn(2, channels, 3, 4, generator=g)
    values = torch.randn(2, len(index), 3, 4, generator=g)
    assert torch.allclose(scatter_add_rounds(old, values, rounds),
                          old.index_add(1, index, values), atol=1e-6)


def test_static_scatter_indices_reads_the_index_when_entered_and_forgets_it():
    from mmsfr.models.layers.condense import static_scatter_indices
    sfr = SparseFeatureReactivation(8, 24, groups=4, factor=4, deploy=True)
    sfr.index.copy_(torch.tensor([5, 5, 1, 2, 3, 4] * 4)[:len(sfr.index)])
    wide = SparseFeatureReactivation(16, 24, groups=4, factor=4, deploy=True)
    spatial = SparseFeatureReactivation(4, 24, kernel_size=3, groups=4, factor=4, deploy=True)
    with static_scatter_indices(nn.Sequential(sfr, wide, spatial), dense_max_growth=8):
        assert sfr.export_rounds is None and sfr.export_weight.shape == (24, 8)
        assert not sfr.export_weight.requires_grad
        # above the threshold, or a 3x3 SFR: ScatterND rounds
        assert wide.export_weight is None and len(wide.export_rounds) == 1
        assert spatial.export_weight is None and spatial.export_rounds is not None
    with static_scatter_indices(sfr, dense_max_growth=0):
        assert sfr.export_weight is None and len(sfr.export_rounds) == max(
            sfr.index.bincount().tolist())
    assert sfr.export_rounds is None and sfr.export_weight is None
    with pytest.raises(RuntimeError), static_scatter_indices(sfr):
        assert sfr.export_weight is not None  # the default threshold (64) covers k = 8
        raise RuntimeError('export failed')
    assert sfr.export_rounds is None and sfr.export_weight is None  # also after a failure


@pytest.mark.parametrize('bad', [-1, 2.0, True, '64'])
def test_static_scatter_indices_rejects_a_bad_threshold(bad):
    from mmsfr.models.layers.condense import static_scatter_indices
    with pytest.raises(ValueError, match=f'dense_max_growth must be an int >= 0.*got {bad!r}'):
        with static_scatter_indices(nn.Identity(), dense_max_growth=bad):
            pass


@pytest.mark.parametrize('groups,factor', [(4, 4), (4, 2), (2, 8)])
def test_dense_reactivation_weight_adds_like_index_add(groups, factor):
    """The dense export form of a 1x1 SFR (old + W @ x) equals its deploy forward for
    random weights and a random index with repeats within and across groups."""
    from mmsfr.models.layers.condense import dense_pointwise, dense_reactivation_weight
    from mmsfr.models.layers.norm_act import norm_act
    g = torch.Generator().manual_seed(groups * factor)
    k, old_channels = 8, 16
    sfr = SparseFeatureReactivation(k, old_channels, groups=groups, factor=factor,
                                    deploy=True).eval()
    randomise_bn(sfr)
    sfr.conv.weight.data.normal_(generator=g)
    index = torch.randint(0, old_channels, sfr.index.shape, generator=g)
    index[1] = index[-1] = index[0]  # a repeat within group 0 and one across groups
    sfr.index.copy_(index)
    x, old = torch.randn(2, k, 3, 5, generator=g), torch.randn(2, old_channels, 3, 5, generator=g)
    with torch.no_grad():
        w = dense_reactivation_weight(sfr.conv.weight, sfr.index, groups, old_channels)
        dense = old + dense_pointwise(norm_act(sfr.norm, sfr.act, x), w)
        expected = sfr(x, old.clone())
    assert w.shape == (old_channels, k)
    assert torch.allclose(dense, expected, atol=1e-5)
