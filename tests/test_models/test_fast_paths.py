"""CPU kernels of the deploy forms: same results as the canonical ops, both paths."""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import randomise_bn
from mmsfr.models import CondenseNetV2, SFRShuffleNetV2
from mmcv.cnn import ConvModule

from mmsfr.models.layers import (FastLinear, FastMaxPool2d, SqueezeExcitation, avg_pool2x2,
                                 condense_model, fold_batchnorm, fuse_conv_module,
                                 grouped_conv2d, grouped_pointwise, inference_fast_path,
                                 max_pool3x3s2, native_kernels)
from mmsfr.models.layers.norm_act import (affine_act_, eval_affine, eval_norm,
                                          eval_norm_act_)
from mmsfr.models.layers.shuffle import channel_shuffle
from mmsfr.testing import rel_diff


@pytest.mark.parametrize('n', [1, 3])
@pytest.mark.parametrize('groups,c_in,c_out', [(4, 8, 12), (8, 64, 32), (1, 5, 7)])
def test_grouped_pointwise_equals_conv_with_folded_shuffles(n, groups, c_in, c_out):
    torch.manual_seed(0)
    x, w = torch.randn(n, c_in, 5, 7), torch.randn(c_out, c_in // groups, 1, 1)
    ref = F.conv2d(x, w, groups=groups)
    assert rel_diff(grouped_pointwise(x, w, groups), ref) < 1e-6
    assert rel_diff(grouped_pointwise(x, w, groups, shuffle_output=True),
                    channel_shuffle(ref, groups)) < 1e-6
    with torch.no_grad():  # the GEMMs write straight into the shuffled layout
        assert rel_diff(grouped_pointwise(x, w, groups, shuffle_output=True),
                        channel_shuffle(ref, groups)) < 1e-6
    shuffled_in = channel_shuffle(x, c_in // groups)  # group g <- channels g, g + G, ...
    assert rel_diff(grouped_pointwise(x, w, groups, strided_input=True),
                    F.conv2d(shuffled_in, w, groups=groups)) < 1e-6
    with pytest.raises(ValueError, match='does not fit'):
        grouped_pointwise(x, torch.randn(c_out, c_in // groups + 1, 1, 1), groups)


@pytest.mark.parametrize('shuffle_output', [False, True])
def test_grouped_pointwise_bias_is_added_per_output_channel_in_both_paths(shuffle_output):
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 16, 5, 3), torch.randn(12, 4, 1, 1), torch.randn(12)
    ref = F.conv2d(x, w, groups=4)
    if shuffle_output:
        ref = channel_shuffle(ref, 4)
    ref = ref + b.view(-1, 1, 1)
    with torch.no_grad():  # baddbmm into the shuffled layout
        fast = grouped_pointwise(x, w, 4, shuffle_output=shuffle_output, bias=b)
    slow = grouped_pointwise(x, w, 4, shuffle_output=shuffle_output, bias=b)
    assert rel_diff(fast, ref) < 1e-6 and rel_diff(slow, ref) < 1e-6


@pytest.mark.parametrize('c_in,c_out,groups,stride', [
    (32, 8, 8, 1),    # 1 output per group: one depthwise pass
    (64, 16, 8, 1),   # 2 outputs per group: two passes
    (32, 8, 8, 2),
    (128, 32, 8, 1),  # 4 outputs per group: plain conv
    (16, 16, 16, 1),  # depthwise itself
])
def test_grouped_conv2d_equals_conv_values_and_grads(c_in, c_out, groups, stride):
    torch.manual_seed(0)
    x = torch.randn(2, c_in, 9, 11, requires_grad=True)
    w = torch.randn(c_out, c_in // groups, 3, 3, requires_grad=True)
    y = grouped_conv2d(x, w, stride, 1, groups)
    ref = F.conv2d(x, w, None, stride, 1, 1, groups)
    assert y.shape == ref.shape and rel_diff(y, ref) < 1e-5
    g = torch.randn_like(ref)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    rx, rw = torch.autograd.grad(ref, (x, w), g)
    assert rel_diff(gx, rx) < 1e-5 and rel_diff(gw, rw) < 1e-5


@pytest.mark.parametrize('c_in,c_out,groups', [
    (32, 8, 8),     # depthwise route
    (128, 32, 8),   # 4 outputs per group: channels-last kernel
    (64, 64, 8),
    (16, 16, 16),   # depthwise itself and dense: plain conv
    (8, 4, 1),
])
def test_grouped_conv2d_inference_returns_the_conv_in_nchw(c_in, c_out, groups):
    torch.manual_seed(0)
    x = torch.randn(2, c_in, 9, 11)
    w = torch.randn(c_out, c_in // groups, 3, 3)
    ref = F.conv2d(x, w, None, 1, 1, 1, groups)
    with torch.no_grad():
        assert inference_fast_path()
        y = grouped_conv2d(x, w, 1, 1, groups)
    assert y.shape == ref.shape and y.is_contiguous() and rel_diff(y, ref) < 1e-5
    assert x.is_contiguous() and w.is_contiguous()  # the inputs keep their layout


@pytest.mark.parametrize('owned', [False, True])
@pytest.mark.parametrize('act_', [torch.relu_, lambda t: F.hardswish(t, inplace=True)])
def test_affine_act_equals_eval_norm_then_activation(owned, act_):
    torch.manual_seed(0)
    bn = randomise_bn(nn.BatchNorm2d(6)).eval()
    x = torch.randn(2, 6, 5, 4)
    ref = act_(bn(x))
    keep = x.clone()
    scale, shift = (t.view(-1, 1, 1) for t in eval_affine(bn))
    y = affine_act_(x, scale, shift, act_, owned=owned)
    assert rel_diff(y, ref) < 1e-6
    assert (y.data_ptr() == x.data_ptr()) is owned  # owned: overwritten, else untouched
    if not owned:
        assert torch.equal(x, keep)
    big = torch.randn(1, 6, 1024, 700)  # >= INPLACE_MIN_NUMEL: the in-place route
    assert rel_diff(eval_norm_act_(big.clone(), eval_norm(bn), act_, owned=True),
                    act_(bn(big))) < 1e-6


@pytest.mark.parametrize('gate', ['sigmoid', 'hsigmoid'])
@pytest.mark.parametrize('with_norm', [False, True])
def test_squeeze_excitation_fast_path_equals_module_path(gate, with_norm):
    torch.manual_seed(0)
    se = randomise_bn(SqueezeExcitation(16, reduction=4, gate=gate, with_norm=with_norm,
                                        bias=True)).eval()
    for x in (torch.randn(2, 16, 5, 5), torch.randn(3, 16)):
        ref = se(x)  # gradients on: the module path
        assert ref.requires_grad
        with torch.no_grad():
            assert inference_fast_path()
            assert rel_diff(se(x), ref) < 1e-6


@pytest.mark.parametrize('n', [1, 3])
@pytest.mark.parametrize('c_in,c_out', [(32, 8), (64, 16), (64, 32)])  # 1, 2, 4 per group
def test_grouped_conv2d_writes_into_a_channel_slice(n, c_in, c_out):
    torch.manual_seed(0)
    x, w = torch.randn(n, c_in, 6, 5), torch.randn(c_out, c_in // 8, 3, 3)
    ref = F.conv2d(x, w, padding=1, groups=8)
    for grad in (False, True):  # summed straight into the slice / computed, then copied
        buf = torch.zeros(n, c_out + 7, 6, 5)
        with torch.set_grad_enabled(grad):
            got = grouped_conv2d(x, w, 1, 1, 8, out=buf[:, 3:3 + c_out])
        assert got.data_ptr() == buf[:, 3:].data_ptr()
        assert rel_diff(buf[:, 3:3 + c_out], ref) < 1e-5
        assert buf[:, :3].abs().sum() == 0 and buf[:, 3 + c_out:].abs().sum() == 0


@pytest.mark.parametrize('h,w', [(8, 8), (7, 9), (2, 3)])
def test_avg_pool2x2_matches_avg_pool_in_both_paths(h, w):
    x = torch.randn(2, 3, h, w)
    ref = F.avg_pool2d(x, 2, 2)
    with torch.no_grad():
        assert inference_fast_path()
        assert rel_diff(avg_pool2x2(x), ref) < 1e-6
    assert not inference_fast_path()  # grad mode: the canonical op
    assert torch.equal(avg_pool2x2(x), ref)


@pytest.mark.parametrize('native_on', [True, False])
@pytest.mark.parametrize('grad', [False, True])
@pytest.mark.parametrize('h,w', [(8, 8), (7, 9)])
def test_avg_pool2x2_into_a_channel_slice_of_a_buffer(native_on, grad, h, w):
    x = torch.randn(2, 3, h, w)
    ref = F.avg_pool2d(x, 2, 2)
    buf = torch.zeros(2, 5, h // 2, w // 2)
    with native_kernels(native_on), torch.set_grad_enabled(grad):
        got = avg_pool2x2(x, out=buf[:, 1:4])
        assert rel_diff(avg_pool2x2(x), ref) < 1e-6
    assert got.data_ptr() == buf[:, 1:].data_ptr()
    assert rel_diff(buf[:, 1:4], ref) < 1e-6
    assert buf[:, 0].abs().sum() == 0 and buf[:, 4].abs().sum() == 0


def test_fast_path_is_off_while_ops_are_observed():
    class Names(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func._overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Names() as seen:
        assert not inference_fast_path()
        avg_pool2x2(torch.rand(1, 2, 4, 4))
        max_pool3x3s2(torch.rand(1, 2, 5, 5))
    assert 'avg_pool2d' in seen.names
    assert 'max_pool2d_with_indices' in seen.names or 'max_pool2d' in seen.names


@pytest.mark.parametrize('h', [1, 2, 3, 8, 9, 112])
@pytest.mark.parametrize('w', [1, 4, 7, 113])
def test_max_pool3x3s2_is_bit_identical_in_both_paths(h, w):
    torch.manual_seed(0)
    x = torch.randn(2, 3, h, w)
    x[0, 1, h // 2, w // 2] = float('nan')  # NaN propagates as in the pooling op
    ref = F.max_pool2d(x, 3, 2, 1)
    with torch.no_grad():
        fast = max_pool3x3s2(x)
    assert fast.shape == ref.shape
    assert torch.equal(fast.nan_to_num(7.0), ref.nan_to_num(7.0))
    assert torch.equal(fast.isnan(), ref.isnan())
    assert torch.equal(max_pool3x3s2(x).nan_to_num(7.0), ref.nan_to_num(7.0))  # grad mode


@pytest.mark.parametrize('kwargs', [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=2, stride=2),
    dict(kernel_size=3, stride=1, padding=1),
])
def test_fast_max_pool_module_equals_max_pool(kwargs):
    x = torch.randn(1, 4, 11, 10)
    with torch.no_grad():
        assert torch.equal(FastMaxPool2d(**kwargs)(x), nn.MaxPool2d(**kwargs)(x))


def test_fast_linear_is_a_drop_in_linear():
    """Same parameters, state_dict keys and init as nn.Linear; the canonical op where
    the kernel does not apply (float64, tracing, ONNX export), with or without it."""
    from mmengine.model import BaseModule
    torch.manual_seed(0)
    fast, plain = FastLinear(12, 5), nn.Linear(12, 5)
    plain.load_state_dict(fast.state_dict())
    assert list(fast.state_dict()) == ['weight', 'bias'] and isinstance(fast, nn.Linear)
    x = torch.randn(2, 12)
    with torch.no_grad():
        assert rel_diff(fast(x), plain(x)) < 1e-6
        assert torch.equal(fast.double()(x.double()), plain.double()(x.double()))
    fast.float()
    traced = torch.jit.trace(fast, x)
    assert any(n.kind() == 'aten::linear' for n in traced.graph.nodes())

    class Head(BaseModule):
        def __init__(self):
            super().__init__(init_cfg=dict(type='Constant', layer='Linear', val=0.5))
            self.fc = FastLinear(3, 2)

    head = Head()
    head.init_weights()  # mmengine matches layer='Linear' on the base class
    assert torch.all(head.fc.weight == 0.5)


def _random_bn(channels):
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.1, 3)
    return bn.eval()


@pytest.mark.parametrize('groups, bias', [(1, False), (4, True), (8, False)])
def test_fold_batchnorm_equals_conv_then_norm(groups, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, 2, 1, groups=groups, bias=bias)
    bn = _random_bn(16)
    weight, shift = fold_batchnorm(conv.weight, conv.bias, bn)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        ref = bn(conv(x))
    assert rel_diff(F.conv2d(x, weight, shift, 2, 1, 1, groups), ref) < 1e-6
    with pytest.raises(ValueError, match='12 channels'):
        fold_batchnorm(conv.weight, None, nn.BatchNorm2d(12))
    with pytest.raises(ValueError, match='running statistics'):
        fold_batchnorm(conv.weight, None, nn.BatchNorm2d(16, track_running_stats=False))


@pytest.mark.parametrize('act', [dict(type='ReLU'), dict(type='HSwish'), None])
def test_fuse_conv_module_keeps_geometry_and_activation(act):
    torch.manual_seed(0)
    module = ConvModule(6, 12, 3, 2, 1, groups=3, norm_cfg=dict(type='BN'), act_cfg=act)
    module.bn = _random_bn(12)
    module.eval()
    fused = fuse_conv_module(module)
    assert not fused.with_norm and fused.conv.bias is not None
    assert (fused.conv.stride, fused.conv.groups) == ((2, 2), 3)
    assert type(fused.activate) is type(module.activate) if act else not fused.with_activation
    x = torch.randn(2, 6, 11, 11)
    with torch.no_grad():
        assert rel_diff(fused(x), module(x)) < 1e-6
    # Nothing to fold: a GroupNorm, or a norm-free module, comes back unchanged.
    gn = ConvModule(6, 12, 3, norm_cfg=dict(type='GN', num_groups=3))
    assert fuse_conv_module(gn) is gn
    assert fuse_conv_module(fused) is fused
    # A double-precision module stays double.
    assert fuse_conv_module(module.double()).conv.weight.dtype == torch.float64


def condensed_pair(model):
    randomise_bn(model)
    condense_model(model, 1.0)
    model.eval()
    deploy = copy.deepcopy(model)
    deploy.switch_to_deploy()
    return model, deploy


@pytest.mark.parametrize('n', [1, 2])
def test_dense_blocks_in_place_path_equals_functional_path(n):
    torch.manual_seed(0)
    arch = dict(depths=(2, 3, 2), growths=(8, 8, 16), groups=4, condense_factor=4,
                sparse_factor=4, hs_from=1, se_from=2)
    masked, deploy = condensed_pair(CondenseNetV2(arch, out_indices=(0, 1, 2)))
    x = torch.rand(n, 3, 33, 47)
    for model in (masked, deploy):
        with torch.no_grad():  # in-place buffers, fast kernels
            fast = model(x)
        with torch.enable_grad():  # concatenations, canonical ops
            slow = model(x)
        for a, b in zip(fast, slow):
            assert a.shape == b.shape and rel_diff(a, b.detach()) < 1e-5
    with torch.no_grad():
        for a, b in zip(masked(x), deploy(x)):
            assert rel_diff(b, a) < 1e-5


@pytest.mark.parametrize('native_on', [True, False])
def test_in_place_path_follows_changed_weights_and_train_mode(native_on):
    torch.manual_seed(0)
    arch = dict(depths=(2,), growths=(8,), groups=4, condense_factor=4, sparse_factor=4)
    _, deploy = condensed_pair(CondenseNetV2(arch, out_indices=(0,)))
    layer = deploy.blocks[0][1]
    x = torch.rand(2, 3, 16, 16)

    def check():
        with torch.no_grad(), native_kernels(native_on):
            fast = deploy(x)[0]
        slow = deploy(x)[0].detach()  # canonical path: module by module
        assert rel_diff(fast, slow) < 1e-5
        return fast

    before = check()
    with torch.no_grad():
        layer.conv_2.norm.running_var.mul_(4)
    after = check()
    assert rel_diff(after, before) > 1e-3
    state = copy.deepcopy(deploy.state_dict())
    state['blocks.0.1.conv_1.conv.weight'] *= -1
    deploy.load_state_dict(state)
    assert rel_diff(check(), after) > 1e-3
    layer.conv_2.norm = copy.deepcopy(layer.conv_2.norm)  # a replaced module
    layer.conv_2.norm.eps = 0.5
    changed = check()
    deploy.double()  # new storage for every tensor
    x = x.double()
    assert rel_diff(check(), changed.double()) < 1e-5
    deploy.train()  # batch statistics, in place and in the canonical path
    with torch.no_grad(), native_kernels(native_on):
        fast = deploy(x)[0]
    assert rel_diff(fast, deploy(x)[0].detach()) < 1e-5


def test_sfr_shufflenet_in_place_path_equals_functional_path():
    torch.manual_seed(0)
    masked, deploy = condensed_pair(SFRShuffleNetV2('0.5x'))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fast = deploy(x)
        ref = masked(x)
    slow = deploy(x)
    for a, b, c in zip(fast, slow, ref):
        assert rel_diff(a, b.detach()) < 1e-5 and rel_diff(a, c) < 1e-5


def test_deploy_backbone_trains_through_the_functional_path():
    torch.manual_seed(0)
    _, deploy = condensed_pair(CondenseNetV2('a'))
    deploy.train()
    out = deploy(torch.rand(2, 3, 64, 64))
    sum(o.mean() for o in out).backward()
    grads = [p.grad for p in deploy.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert isinstance(deploy.blocks[0], nn.Sequential)  # state_dict keys blocks.b.l
