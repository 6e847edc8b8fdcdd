"""The C++ kernels of mmsfr._ext: same results as the PyTorch path, clear errors.

Skipped when the extension is not built, unless ``MMSFR_REQUIRE_NATIVE`` is set (CI
sets it: a broken build must fail there, not skip).
"""
import contextlib
import copy
import os

import pytest
import torch
from torch import nn

from conftest import randomise_bn
from mmsfr.models import CondenseNetV2
from mmsfr.models.layers.dense_plan import activation_code, dense_plan, se_arguments
from mmsfr import ops
from mmsfr.models.layers import avg_pool2x2, condense_model
from mmsfr.testing import rel_diff

if not ops.native_available() and os.environ.get('MMSFR_REQUIRE_NATIVE'):
    raise ImportError(f'mmsfr._ext is required (MMSFR_REQUIRE_NATIVE) but {ops.STATUS}')
pytestmark = pytest.mark.skipif(not ops.native_available(), reason=ops.STATUS)

@pytest.fixture(params=list(ops.ISAS))
def isa(request):
    """Run a test with the kernels of every instruction set this CPU runs."""
    if ops.ISAS.index(request.param) < ops.ISAS.index(ops.best_isa()):
        pytest.skip(f'this CPU cannot run the {request.param} kernels')
    previous = ops.set_isa(request.param)
    yield request.param
    ops.set_isa(previous)


def deploy_model(arch, seed=0, **kwargs):
    torch.manual_seed(seed)
    blocks = len(CondenseNetV2.arch_settings[arch]['depths'])
    model = CondenseNetV2(arch, out_indices=tuple(range(blocks)), **kwargs)
    randomise_bn(model, seed)
    model.eval()
    condense_model(model, 1.0)
    masked = copy.deepcopy(model)
    model.switch_to_deploy()
    return model, masked


def forward(model, x, native_on):
    with torch.inference_mode(), ops.native_kernels(native_on):
        return model(x)


@contextlib.contextmanager
def torch_threads(threads):
    """torch's intra-op thread count set to ``threads`` within the context."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# 'c' at 230x198: the LGC kernel packs blocks 1 and 2 in several tiles per group, the
# last one partial.
@pytest.mark.parametrize('arch,shape', [('a', (2, 3, 67, 45)), ('b', (1, 3, 64, 64)),
                                        ('c', (1, 3, 230, 198)), ('cifar-110', (2, 3, 13, 9))])
def test_native_forward_equals_pytorch_path_and_masked_form(isa, arch, shape):
    model, masked = deploy_model(arch)
    x = torch.rand(*shape)
    fused = forward(model, x, True)
    plain = forward(model, x, False)
    with torch.no_grad():
        ref = masked(x)
    layer = model.blocks[-1][-1]
    assert dense_plan(layer, torch.empty(1)) is not None  # kernels applied
    for a, b, r in zip(fused, plain, ref):
        assert a.shape == b.shape == r.shape
        assert rel_diff(a, b) < 1e-5
        assert rel_diff(a, r) < 1e-5


def test_native_forward_of_a_channels_last_model_equals_pytorch_path():
    # model.to(memory_format=torch.channels_last) leaves the 3x3 conv weights
    # non-contiguous; the kernels get contiguous copies, the weights stay as they are.
    model, masked = deploy_model('a')
    model = model.to(memory_format=torch.channels_last)
    weight = model.blocks[2][0].conv_2.conv.weight
    assert not weight.is_contiguous()
    assert dense_plan(model.blocks[2][0], torch.empty(1)) is not None
    x = torch.rand(1, 3, 48, 40).to(memory_format=torch.channels_last)
    for a, b in zip(forward(model, x, True), forward(model, x, False)):
        assert rel_diff(a, b) < 1e-5
    assert not weight.is_contiguous()


def test_native_forward_with_two_threads_equals_one_thread():
    model, _ = deploy_model('c')
    x = torch.rand(1, 3, 96, 80)
    with torch_threads(1):
        one = forward(model, x, True)
    with torch_threads(2):
        two = forward(model, x, True)
    for a, b in zip(one, two):
        assert rel_diff(a, b) < 1e-6


def test_kernels_run_on_every_torch_thread():
    # at::parallel_for is inline OpenMP code: compiled without -fopenmp it runs serially.
    with torch_threads(2):
        assert ops.parallel_threads(8) == 2
        assert ops.parallel_threads(1) == 1
    with torch_threads(1):
        assert ops.parallel_threads(8) == 1
    with pytest.raises(RuntimeError, match='tasks must be positive, got 0'):
        ops.parallel_threads(0)


@pytest.mark.parametrize('width', [3, 7, 14, 17, 33])
def test_rows_read_in_whole_vectors_stay_inside_the_buffer(isa, width):
    """The LGC kernel reads feature rows in whole vectors, past a row's end where the
    buffer goes on; rows near the end of a small buffer (few channels after them) and
    rows of every width around the vector sizes give the PyTorch path's result."""
    from mmsfr.models.backbones.condensenet import DenseBlock, DenseLayer
    torch.manual_seed(width)
    block = DenseBlock(DenseLayer(8, 4, 4, 4, 4, deploy=True),
                       DenseLayer(12, 4, 4, 4, 4, deploy=True))
    randomise_bn(block, width)
    with torch.no_grad():
        for layer in block:
            layer.conv_1.index.copy_(torch.randint(0, layer.conv_1.in_channels,
                                                   layer.conv_1.index.shape))
            layer.conv_1.index[-1] = layer.conv_1.in_channels - 1  # the last old channel
    block.eval()
    x = torch.randn(2, 8, 1, width)
    assert rel_diff(forward(block, x, True), forward(block, x, False)) < 1e-5


# (growth, groups, bottleneck): the 3x3 conv's groups have 1, 2, 3, 4 or 8 outputs and
# the 1x1 conv's 1, 2, 3, 4, 6 or 8, so every register block of both kernels runs, on
# maps whose padded rows end inside chunks of 32 to 192 positions (the 7x7 map of the
# last blocks among them), on 1 and 2 threads (each thread's task: its own rows and
# bands); random LGC and SFR indices (repeats included).
@pytest.mark.parametrize('growth,groups,bottleneck', [(4, 4, 1), (8, 4, 1), (6, 2, 2),
                                                      (16, 4, 1), (16, 2, 1), (8, 8, 3)])
@pytest.mark.parametrize('size', [(5, 7), (7, 7), (9, 30), (23, 17)])
@pytest.mark.parametrize('threads', [1, 2])
def test_every_register_block_equals_pytorch_path(isa, growth, groups, bottleneck, size,
                                                  threads):
    from mmsfr.models.backbones.condensenet import DenseBlock, DenseLayer
    torch.manual_seed(growth * groups)
    first = 2 * growth
    block = DenseBlock(*(DenseLayer(first + i * growth, growth, groups, groups, groups,
                                    bottleneck, act_cfg=dict(type='HSwish'), deploy=True)
                         for i in range(2)))
    randomise_bn(block, growth)
    with torch.no_grad():
        for layer in block:
            for part in (layer.conv_1, layer.sfr):
                part.index.copy_(torch.randint(0, part.in_channels if part is layer.conv_1
                                               else part.out_channels, part.index.shape))
    block.eval()
    x = torch.randn(1, first, *size)
    with torch_threads(threads):
        native = forward(block, x, True)
    assert rel_diff(native, forward(block, x, False)) < 1e-5


def test_pool_kernel_equals_pytorch_path_and_rejects_bad_output():
    x = torch.randn(2, 6, 9, 7)
    with torch.no_grad(), ops.native_kernels(False):
        ref = avg_pool2x2(x)
    buf = torch.zeros(2, 8, 4, 3)
    ops.avg_pool2x2_(buf[:, 2:], x)
    assert torch.equal(buf[:, 2:], ref)  # the same sums in the same order
    whole = torch.zeros(2, 8, 4, 3)  # a larger buffer: written in its first 6 channels
    ops.avg_pool2x2_(whole, x)
    assert torch.equal(whole[:, :6], ref) and not whole[:, 6:].any()
    with pytest.raises(RuntimeError, match=r'out must be \(2, C >= 6, 4, 3\) for x'):
        ops.avg_pool2x2_(torch.empty(2, 6, 4, 4), x)
    with pytest.raises(RuntimeError, match='planes must be contiguous'):
        ops.avg_pool2x2_(torch.empty(2, 6, 3, 4).transpose(2, 3), x)
    with pytest.raises(RuntimeError, match='x must be a contiguous float32 CPU tensor, got Double'):
        ops.avg_pool2x2_(buf[:, 2:], x.double())


def test_native_kernels_switch_is_scoped():
    assert ops.native_enabled()
    with ops.native_kernels(False):
        assert not ops.native_enabled()
    assert ops.native_enabled()


def test_layers_the_kernels_do_not_implement_use_the_pytorch_path():
    model, masked = deploy_model('a')
    layer = model.blocks[2][0]
    buf = torch.empty(1)
    assert dense_plan(layer, buf) is not None
    assert activation_code(nn.Sigmoid()) is None
    act = layer.conv_2.act
    layer.conv_2.act = nn.Sigmoid()
    assert dense_plan(layer, buf) is None
    layer.conv_2.act = act
    layer.sfr.norm.train()  # batch statistics: the kernels apply running ones only
    assert dense_plan(layer, buf) is None
    layer.sfr.norm.eval()
    assert dense_plan(layer, buf.double()) is None
    model.double()
    assert dense_plan(layer, buf) is None  # float64 weights: not for the kernels
    x = torch.rand(1, 3, 40, 40, dtype=torch.float64)
    with torch.no_grad():
        ref = masked.double()(x)
    for a, r in zip(forward(model, x, True), ref):
        assert rel_diff(a, r) < 1e-10


def kernel_call(model, block=2):
    """A deploy layer with SFR (of ``block``), a buffer and the kernels' arguments for it."""
    layer = model.blocks[block][1]
    channels = layer.conv_1.in_channels
    buf = torch.rand(1, channels + layer.growth, 6, 5)
    return layer, buf, channels, dense_plan(layer, buf)


def test_kernels_take_the_modules_tensors_as_stored():
    model, _ = deploy_model('a')
    layer, buf, channels, args = kernel_call(model)
    lgc, conv_2, sfr = layer.conv_1, layer.conv_2, layer.sfr
    index, norm, eps, act, weight, groups, norm_2, eps_2, act_2, conv_weight = args.lgc
    assert index is lgc.index and weight is lgc.conv.weight and groups == lgc.groups
    assert conv_weight is conv_2.conv.weight and (act, act_2) == (2, 2)  # hard-swish
    for given, bn in ((norm, lgc.norm), (norm_2, conv_2.norm), (args.sfr[0], sfr.norm)):
        assert [t.data_ptr() for t in given] == [
            t.data_ptr() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)]
    assert (eps, eps_2) == (lgc.norm.eps, conv_2.norm.eps)
    assert args.sfr[3] is sfr.conv.weight and args.sfr[5] is sfr.index


def route(name):
    """The context in which the operator wrappers take ``name``'s way to the kernels:
    ``'direct'`` (the extension's bindings, plain eager code) or ``'dispatcher'``
    (``torch.ops.mmsfr``, here because autograd records)."""
    return torch.no_grad() if name == 'direct' else torch.enable_grad()


@pytest.fixture
def kernel_calls(monkeypatch):
    """The names of the kernel bindings the wrappers call, in order (the bindings still
    run)."""
    from mmsfr.ops import dense_layer
    calls = []
    for name, kernel in list(dense_layer._KERNELS.items()):
        def spy(*args, _kernel=kernel, _name=name):
            calls.append(_name)
            _kernel(*args)
        monkeypatch.setitem(dense_layer._KERNELS, name, spy)
    return calls


def test_plain_eager_calls_go_straight_to_the_kernels_others_through_the_dispatcher(
        kernel_calls):
    from torch.utils._python_dispatch import TorchDispatchMode
    model, _ = deploy_model('a')  # hard-swish from block 2, SE from block 3
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
    assert set(kernel_calls) == {'lgc_conv_', 'sfr_', 'se_', 'avg_pool2x2_'}
    kernel_calls.clear()
    # Under the profiler the operators run through the dispatcher, which records them.
    with torch.inference_mode(), torch.profiler.profile() as prof:
        again = model(x)
    assert kernel_calls == [] and all(torch.equal(a, b) for a, b in zip(again, expected))
    names = {event.name for event in prof.events()}
    assert {'mmsfr::lgc_conv_', 'mmsfr::sfr_', 'mmsfr::se_', 'mmsfr::avg_pool2x2_'} <= names

    seen = []

    class Seen(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    x, weight, bias = torch.rand(2, 8), torch.rand(3, 8), torch.rand(3)
    out, direct = torch.empty(2, 3), torch.empty(2, 3)
    with torch.no_grad(), Seen():
        ops.linear_(out, x, weight, bias)
    assert seen == ['mmsfr.linear_.default'] and kernel_calls == []
    with torch.no_grad():
        ops.linear_(direct, x, weight, bias)
    assert kernel_calls == ['linear_'] and torch.equal(direct, out)


class Recorded(torch.Tensor):
    """A tensor subclass that records the torch functions called on it."""

    calls: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})

    @classmethod
    def names(cls) -> set:
        """The names of the functions recorded."""
        return {getattr(func, '__name__', '') for func in cls.calls}


def assert_logits_close(out, expected):
    """``out`` (maybe of a subclass) equals ``expected`` within 1e-5."""
    for a, b in zip(out, expected):
        assert rel_diff(a.as_subclass(torch.Tensor), b) < 1e-5


def test_function_modes_see_the_operators_and_subclasses_take_the_canonical_ops(
        kernel_calls):
    from torch.overrides import TorchFunctionMode
    model, _ = deploy_model('a')
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
    kernel_calls.clear()
    seen = []

    class Seen(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    # A function mode sees the operators (through the dispatcher), not a binding call.
    with torch.inference_mode(), Seen():
        again = model(x)
    assert kernel_calls == [] and all(torch.equal(a, b) for a, b in zip(again, expected))
    assert {'mmsfr.lgc_conv_', 'mmsfr.sfr_', 'mmsfr.se_', 'mmsfr.avg_pool2x2_'} <= set(seen)

    # A subclass's handler sees every op on it: an input of a subclass takes the
    # canonical ops everywhere, a buffer of a subclass in its layer.
    Recorded.calls = []
    with torch.inference_mode():
        out = model(x.as_subclass(Recorded))
    assert kernel_calls == [] and 'conv2d' in Recorded.names()
    assert_logits_close(out, expected)
    norm = model.blocks[2][1].conv_1.norm
    norm.running_mean = norm.running_mean.as_subclass(Recorded)
    Recorded.calls = []
    with torch.inference_mode():
        out = model(x)
    assert 'batch_norm' in Recorded.names()
    assert 'lgc_conv_' in kernel_calls  # the other layers keep the kernels
    assert_logits_close(out, expected)


@pytest.mark.parametrize('way', ['direct', 'dispatcher'])
def test_both_ways_to_a_kernel_compute_the_same_buffer(isa, way, kernel_calls):
    model, _ = deploy_model('c')
    layer, buf, channels, args = kernel_call(model, block=3)  # with SE
    expected = buf.clone()
    torch.ops.mmsfr.lgc_conv_(expected, channels, *args.lgc)
    torch.ops.mmsfr.se_(expected, channels, layer.growth, *args.se_args)
    torch.ops.mmsfr.sfr_(expected, channels, layer.growth, *args.sfr)
    with route(way):
        ops.lgc_conv_(buf, channels, *args.lgc)
        ops.se_(buf, channels, layer.growth, *args.se_args)
        ops.sfr_(buf, channels, layer.growth, *args.sfr)
    assert torch.equal(buf, expected)
    assert kernel_calls == (['lgc_conv_', 'se_', 'sfr_'] if way == 'direct' else [])


@pytest.mark.parametrize('way', ['direct', 'dispatcher'])
def test_kernels_reject_bad_inputs_with_the_bad_value(way, kernel_calls):
    with route(way):
        check_bad_inputs_are_rejected()
    assert bool(kernel_calls) == (way == 'direct')


def check_bad_inputs_are_rejected():
    model, _ = deploy_model('a')
    layer, buf, channels, args = kernel_call(model)
    ext = ops
    index, norm, eps, act, weight, groups, norm_2, eps_2, act_2, conv_weight = args.lgc
    ext.lgc_conv_(buf, channels, *args.lgc)  # valid: runs
    with pytest.raises(RuntimeError, match='float32 CPU tensor, got Double'):
        ext.lgc_conv_(buf.double(), channels, *args.lgc)
    with pytest.raises(RuntimeError, match='not contiguous'):
        ext.lgc_conv_(buf.transpose(2, 3), channels, *args.lgc)
    bad_index = index.clone()
    bad_index[0] = channels + 1
    with pytest.raises(RuntimeError, match=f'index {channels + 1} is outside'):
        ext.lgc_conv_(buf, channels, bad_index, *args.lgc[1:])
    with pytest.raises(RuntimeError, match=r'must be 0 \(identity\), 1 \(ReLU\) or 2 '
                                           r'\(hard-swish\), got 7'):
        ext.lgc_conv_(buf, channels, index, norm, eps, 7, *args.lgc[4:])
    with pytest.raises(RuntimeError, match='exceed the buffer'):
        ext.lgc_conv_(buf[:, :channels].contiguous(), channels, *args.lgc)
    with pytest.raises(RuntimeError, match='conv_weight must be a non-empty 3x3 conv weight'):
        ext.lgc_conv_(buf, channels, *args.lgc[:-1], conv_weight[:, :, :1, :1].contiguous())
    with pytest.raises(RuntimeError, match='groups 0 must be positive'):
        ext.lgc_conv_(buf, channels, index, norm, eps, act, weight, 0, *args.lgc[6:])
    with pytest.raises(RuntimeError, match='groups 3 must be positive and divide'):
        ext.lgc_conv_(buf, channels, index, norm, eps, act, weight, 3, *args.lgc[6:])
    with pytest.raises(RuntimeError, match='norm_2 running_var must have'):
        ext.lgc_conv_(buf, channels, *args.lgc[:6], [*norm_2[:3], norm_2[3][1:]],
                      *args.lgc[7:])
    with pytest.raises(RuntimeError, match=r'norm must be 4 tensors \(weight, bias, '
                                           r'running_mean, running_var\), got 3'):
        ext.lgc_conv_(buf, channels, index, norm[:3], *args.lgc[2:])
    sfr_norm, sfr_eps, sfr_act, sfr_weight, sfr_groups, sfr_index = args.sfr
    with pytest.raises(RuntimeError, match='does not map'):
        ext.sfr_(buf, channels, layer.growth, sfr_norm, sfr_eps, sfr_act,
                 sfr_weight[:-sfr_groups].contiguous(), sfr_groups, sfr_index)
    with pytest.raises(RuntimeError, match='index -1 is outside'):
        ext.sfr_(buf, channels, layer.growth, *args.sfr[:5], torch.full_like(sfr_index, -1))
    with pytest.raises(RuntimeError, match='norm weight must be a contiguous float32'):
        ext.sfr_(buf, channels, layer.growth, [t.double() for t in sfr_norm], *args.sfr[1:])


def sfr_reference(buf, channels, growth, norm, eps, act, weight, groups, index):
    """The SFR kernel's sum in PyTorch ops: act(BN(new)), group g's inputs g, g + groups,
    ..., output j (of group j // (outputs / groups)) added into old channel index[j]."""
    new = buf[:, channels:channels + growth]
    w, b, mean, var = norm
    u = (new - mean[:, None, None]) / torch.sqrt(var[:, None, None] + eps)
    u = u * w[:, None, None] + b[:, None, None]
    u = [nn.Identity(), nn.ReLU(), nn.Hardswish()][act](u)
    per_group = growth // groups
    # Group g's inputs in order t: channel g + groups * t (the shuffled order).
    shuffled = u.reshape(u.shape[0], per_group, groups, *u.shape[2:]).transpose(1, 2)
    updates = nn.functional.conv2d(shuffled.reshape_as(u), weight, groups=groups)
    out = buf.clone()
    out[:, :channels].index_add_(1, index, updates)
    return out


# (channels, growth, groups) x positions: rows shorter than a vector, of whole vectors,
# of whole chunks (64 positions with AVX-512) and of chunks plus 1 to 4 vectors, the
# last one partial; 1 to 16 inputs per group; random indices with repeats (whole blocks
# of four equal outputs too), on one and two threads. The channels after the old ones
# (the new features) must come back unchanged: the kernel writes no old row past its end.
@pytest.mark.parametrize('channels,growth,groups', [(12, 4, 4), (40, 8, 4), (96, 32, 2),
                                                     (64, 128, 8)])
@pytest.mark.parametrize('h,w', [(1, 1), (1, 5), (4, 4), (7, 7), (8, 8), (9, 9), (14, 14),
                                 (5, 26)])
@pytest.mark.parametrize('threads', [1, 2])
def test_sfr_kernel_equals_index_add_of_the_grouped_conv(isa, channels, growth, groups,
                                                         h, w, threads):
    g = torch.Generator().manual_seed(channels * h + w)
    buf = torch.randn(2, channels + growth, h, w, generator=g)
    norm = [torch.rand(growth, generator=g) + 0.5, torch.randn(growth, generator=g),
            torch.randn(growth, generator=g), torch.rand(growth, generator=g) + 0.5]
    outputs = 2 * channels
    weight = torch.randn(outputs, growth // groups, 1, 1, generator=g)
    index = torch.randint(0, channels, (outputs, ), generator=g)
    index[:4] = channels - 1  # a block of four equal rows, the last old channel
    for act in (1, 2):
        ref = sfr_reference(buf, channels, growth, norm, 1e-3, act, weight, groups, index)
        got = buf.clone()
        with torch_threads(threads):
            ops.sfr_(got, channels, growth, norm, 1e-3, act, weight, groups, index)
        assert torch.equal(got[:, channels:], buf[:, channels:])
        assert rel_diff(got, ref) < 1e-5


# (growth, h, w): sums and products of fewer elements than a vector, of whole groups of
# vectors, and of vectors plus a tail, for 8- and 16-float vectors.
@pytest.mark.parametrize('growth,h,w', [(16, 5, 3), (40, 7, 9), (128, 8, 8)])
@pytest.mark.parametrize('gate', ['sigmoid', 'hsigmoid'])
@pytest.mark.parametrize('bias', [False, True])
def test_se_kernel_equals_squeeze_excitation(isa, gate, bias, growth, h, w):
    from mmsfr.models.layers import SqueezeExcitation
    torch.manual_seed(0)
    se = SqueezeExcitation(growth, reduction=2, gate=gate, bias=bias).eval()
    buf = torch.randn(2, 8 + growth, h, w)
    expected = buf.clone()
    new = expected[:, 8:]
    with torch.no_grad():
        new.mul_(se.excitation(new))
    ops.se_(buf, 8, growth, *se_arguments(se))
    assert torch.equal(buf[:, :8], expected[:, :8])  # the old channels are untouched
    assert rel_diff(buf, expected) < 1e-6


def test_se_kernel_rejects_bad_inputs():
    from mmsfr.models.layers import SqueezeExcitation
    se = SqueezeExcitation(16, reduction=2)
    w1, b1, w2, b2, _ = se_arguments(se)
    buf = torch.rand(1, 24, 4, 4)
    ext = ops
    with pytest.raises(RuntimeError, match=r'gate code must be 0 \(sigmoid\) or 1 '
                                           r'\(hard-sigmoid\), got 3'):
        ext.se_(buf, 8, 16, w1, b1, w2, b2, 3)
    with pytest.raises(RuntimeError, match='not a squeeze-excite of 12 channels'):
        ext.se_(buf, 8, 12, w1, b1, w2, b2, 0)
    assert se_arguments(SqueezeExcitation(16, with_norm=True)) is None
    assert se_arguments(SqueezeExcitation(16).double()) is None


# (rows, in_features): fewer inputs than a vector, whole groups of vectors, and vectors
# plus a tail; up to STREAMED_MAX_ROWS rows (the kernel) and one more (nn.Linear).
@pytest.mark.parametrize('rows,in_features', [(1, 5), (1, 129), (3, 64), (8, 67), (9, 67)])
@pytest.mark.parametrize('bias', [False, True])
def test_fast_linear_equals_linear(isa, rows, in_features, bias, monkeypatch):
    from mmsfr.models.layers import FastLinear
    from mmsfr.models.layers.linear import STREAMED_MAX_ROWS
    torch.manual_seed(rows)
    fast = FastLinear(in_features, 37, bias=bias)
    x = torch.randn(rows, in_features)
    expected = nn.functional.linear(x, fast.weight, fast.bias)
    calls = []
    kernel = ops.linear_
    monkeypatch.setattr(ops, 'linear_', lambda *args: (calls.append(args), kernel(*args)))
    with torch.no_grad():
        y = fast(x)
    assert len(calls) == (rows <= STREAMED_MAX_ROWS)
    assert y.shape == (rows, 37) and rel_diff(y, expected) < 1e-6
    x.requires_grad_()
    fast(x).sum().backward()  # with autograd: nn.Linear's forward
    assert len(calls) == (rows <= STREAMED_MAX_ROWS) and x.grad.shape == x.shape


def test_linear_kernel_rejects_bad_inputs():
    x, weight, bias = torch.rand(2, 8), torch.rand(3, 8), torch.rand(3)
    out = torch.empty(2, 3)
    with pytest.raises(RuntimeError, match=r'are not \(M, K\), \(N, K\) and \(M, N\)'):
        ops.linear_(out, x, torch.rand(3, 7), bias)
    with pytest.raises(RuntimeError, match='bias must have 3 entries, got 4'):
        ops.linear_(out, x, weight, torch.rand(4))
    with pytest.raises(RuntimeError, match='x must be a contiguous float32 CPU tensor, got Double'):
        ops.linear_(out, x.double(), weight, bias)
    with pytest.raises(RuntimeError, match='not contiguous'):
        ops.linear_(out, torch.rand(8, 2).t(), weight, bias)
    with pytest.raises(RuntimeError, match='refer to a single memory location'):
        ops.linear_(x.view(-1)[:6].view(2, 3), x, weight, bias)  # out overlaps x
    ops.linear_(torch.empty(0, 3), torch.empty(0, 8), weight, None)  # no rows: nothing
