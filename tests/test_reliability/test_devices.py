"""Device hygiene: no CPU tensor is created in a forward, every buffer follows
``.to()``, and the C++ kernels see only float32 CPU tensors.

Each family, in its train-time form and in its deploy form, is moved to the ``meta``
device and run in train mode with autograd and in eval mode under ``torch.no_grad``
and ``torch.inference_mode`` (the in-place fast paths). A ``TorchFunctionMode``
fails at the first torch call that takes or returns a tensor off the model's
device (a CPU tensor made inside the forward, or a tensor attribute that did not
follow ``.to()``); a stand-in for ``mmsfr._ext`` fails at the first kernel call with
a tensor that is not a float32 / int64 CPU tensor. The stand-in is installed even
where the extension is not built, so the gating is tested everywhere.
"""
from __future__ import annotations

import copy
from types import ModuleType
from typing import Iterator

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from mmsfr.models import (CondenseNet, CondenseNetV2, SFRShuffleNetV2, SFRShuffleNetV2Plus,
                          ShuffleNetV2, ShuffleNetV2Plus, condense_model, convert_to_deploy)
from mmsfr.models.heads.cls_heads import CondenseNetClsHead
from mmsfr import ops
from mmsfr.models.backbones import condensenet
from mmsfr.models.layers import (CondensingLinear, LearnedGroupConv, SparseFeatureReactivation,
                                 dense_plan, inference_fast_path, pooling)
from mmsfr.testing import randomise_bn

# Tiny CondenseNets with every part: LGC, SFR, SE and hard-swish from block 1.
TINY_V2 = dict(depths=(1, 2, 2), growths=(4, 8, 8), groups=2, condense_factor=2,
               sparse_factor=2, hs_from=1, se_from=1)
TINY_V1 = dict(TINY_V2, sparse_factor=None, hs_from=None, se_from=None)
FAMILIES = [(CondenseNetV2, dict(arch=TINY_V2, out_norm='all')),
            (CondenseNet, dict(arch=TINY_V1)),
            (ShuffleNetV2, dict(arch='0.5x', out_indices=(0, 1, 2, 3, 4))),
            (ShuffleNetV2Plus, dict(arch='small')),
            (SFRShuffleNetV2, dict(arch='0.5x')),
            (SFRShuffleNetV2Plus, dict(arch='small'))]
IDS = [cls.__name__ for cls, _ in FAMILIES]
FORMS = ['train-time', 'deploy']
#: The dtypes a tensor handed to a C++ kernel may have (data, indices).
KERNEL_DTYPES = (torch.float32, torch.int64)


def build(cls: type, kwargs: dict, form: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    model = randomise_bn(cls(**kwargs)).to(dtype)
    if form == 'deploy':
        condense_model(model, 1.0)
        convert_to_deploy(model)
    return model


class DeviceWatch(TorchFunctionMode):
    """Fails at the first torch call that takes or returns a tensor off ``device``;
    records whether the inference fast path was on during the calls."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device
        self.fast_path: set[bool] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.fast_path.add(inference_fast_path())
        for t in tree_flatten((args, kwargs, out))[0]:
            if isinstance(t, torch.Tensor) and t.device.type != self.device:
                name = getattr(func, '__qualname__', repr(func))
                raise AssertionError(f'{name} took or made a {t.device.type} tensor '
                                     f'{tuple(t.shape)} in a {self.device} forward')
        return out


class KernelSpy:
    """Stands in for :mod:`mmsfr.ops` where the models call it: reports the operators
    as available (and follows the switch), records every operator call, fails one that gets a tensor that is
    not a float32 / int64 CPU tensor, and forwards the rest to the real operators (if
    built)."""

    KERNELS = ('lgc_conv_', 'sfr_', 'se_', 'avg_pool2x2_')

    def __init__(self, real: ModuleType | None) -> None:
        self.real = real
        self.calls: list[str] = []

    def native_enabled(self) -> bool:
        """On unless switched off (``ops.native_kernels(False)``), built or not."""
        return ops.loading._switch.enabled

    def __getattr__(self, name: str):
        if name not in self.KERNELS:
            raise AttributeError(name)

        def kernel(*args):
            self.calls.append(name)
            for t in tree_flatten(args)[0]:
                if isinstance(t, torch.Tensor) and (not t.is_cpu or t.dtype not in KERNEL_DTYPES):
                    raise AssertionError(f'C++ kernel {name} called with a {t.dtype} tensor '
                                         f'on {t.device}')
            if self.real is None:
                raise AssertionError(f'C++ kernel {name} called but mmsfr._ext is not built')
            return getattr(self.real, name)(*args)
        return kernel


@pytest.fixture
def kernels(monkeypatch) -> Iterator[KernelSpy]:
    """The C++ operators switched on, behind a :class:`KernelSpy` in every module that
    calls them."""
    spy = KernelSpy(ops if ops.native_available() else None)
    for module in (condensenet, dense_plan, pooling):
        monkeypatch.setattr(module, 'ops', spy)
    with ops.native_kernels(True):
        yield spy


def meta_forward(model: nn.Module, mode: str) -> tuple[torch.Tensor, ...]:
    """``model`` on a meta batch in ``mode``, under :class:`DeviceWatch`."""
    x = torch.empty(2, 3, 64, 64, device='meta')
    watch = DeviceWatch('meta')
    if mode == 'train':
        model.train()
        with watch:
            outs = model(x)
            sum(o.sum() for o in outs).backward()
        assert watch.fast_path == {False}
    else:
        model.eval()
        context = torch.no_grad() if mode == 'no_grad' else torch.inference_mode()
        with context, watch:
            outs = model(x)
        assert watch.fast_path == {True}  # the in-place inference paths ran
    return outs


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('cls,kwargs', FAMILIES, ids=IDS)
def test_meta_forward_makes_no_cpu_tensor_and_calls_no_kernel(cls, kwargs, form, kernels):
    model = build(cls, kwargs, form).to('meta')
    stay = [n for n, t in (*model.named_parameters(), *model.named_buffers())
            if t.device.type != 'meta']
    assert not stay, f'{stay[:3]} did not follow .to()'
    for mode in ('train', 'no_grad', 'inference_mode'):
        outs = meta_forward(model, mode)
        assert [o.shape[1] for o in outs] == list(model.out_channels)
        assert all(o.device.type == 'meta' for o in outs)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.device.type == 'meta' for g in grads)
    assert kernels.calls == []


@pytest.mark.parametrize('cls,kwargs', [FAMILIES[0], FAMILIES[1], FAMILIES[4]],
                         ids=['CondenseNetV2', 'CondenseNet', 'SFRShuffleNetV2'])
@pytest.mark.parametrize('how', ['built', 'converted'])
def test_every_index_is_a_buffer_that_follows_to(cls, kwargs, how):
    if how == 'built':
        backbone = cls(deploy=True, **kwargs)
        head = CondenseNetClsHead(num_classes=3, in_channels=16, deploy=True)
    else:
        backbone = build(cls, kwargs, 'deploy')
        head = convert_to_deploy(CondenseNetClsHead(num_classes=3, in_channels=16))
    model = nn.ModuleDict(dict(backbone=backbone, head=head))
    modules = [(n, m) for n, m in model.named_modules() if hasattr(m, 'index')]
    kinds = {type(m) for _, m in modules}
    assert CondensingLinear in kinds
    assert (LearnedGroupConv in kinds) == issubclass(cls, CondenseNetV2)
    assert (SparseFeatureReactivation in kinds) == (cls is not CondenseNet)
    state = model.state_dict()
    for name, m in modules:
        assert m._buffers.get('index') is m.index, f'{name}.index is not a buffer'
        assert m.index.dtype == torch.int64 and torch.equal(state[f'{name}.index'], m.index)
    values = [m.index.clone() for _, m in modules]
    model.half()
    assert all(m.index.dtype == torch.int64 and torch.equal(m.index, v)
               for (_, m), v in zip(modules, values))
    model.to('meta')
    assert all(m.index.device.type == 'meta' for _, m in modules)


#: The parameters ``frozen_stages=1`` freezes: the stem and the first stage.
FROZEN = ('stem.', 'blocks.0.', 'stages.0.')


@pytest.mark.parametrize('cls,kwargs', [FAMILIES[0], FAMILIES[1], FAMILIES[5]],
                         ids=['CondenseNetV2', 'CondenseNet', 'SFRShuffleNetV2Plus'])
def test_conversion_builds_on_the_dtype_and_keeps_requires_grad(cls, kwargs):
    model = build(cls, dict(kwargs, frozen_stages=1), 'train-time', torch.float64).eval()
    condense_model(model, 1.0)
    masked = copy.deepcopy(model)
    convert_to_deploy(model)
    head = CondenseNetClsHead(num_classes=3, in_channels=16).double()
    head.fc.linear.weight.requires_grad_(False)
    convert_to_deploy(head)
    for name, t in (*model.named_parameters(), *model.named_buffers(),
                    *head.named_parameters()):
        assert t.dtype in (torch.float64, torch.int64), f'{name} is {t.dtype}'
    trained = {n: p.requires_grad for n, p in model.named_parameters()}
    assert any(n.startswith(FROZEN) for n in trained)
    assert all(grad != n.startswith(FROZEN) for n, grad in trained.items())
    assert not head.fc.linear.weight.requires_grad and head.fc.linear.bias.requires_grad
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(model(x), masked(x)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('cls,kwargs', [FAMILIES[0], FAMILIES[1]], ids=IDS[:2])
def test_only_float32_cpu_models_reach_the_kernels(cls, kwargs, kernels):
    model = build(cls, kwargs, 'deploy').eval()
    x = torch.rand(2, 3, 40, 48)
    if kernels.real is not None:  # the spy sees the kernels of a float32 model
        with torch.inference_mode():
            model(x)
        assert {'lgc_conv_', 'avg_pool2x2_'} <= set(kernels.calls)
        kernels.calls.clear()
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        other = copy.deepcopy(model).to(dtype)
        with torch.inference_mode():
            outs = other(x.to(dtype))
            with ops.native_kernels(False):
                plain = other(x.to(dtype))
        assert kernels.calls == [], f'{dtype} reached {kernels.calls}'
        assert all(o.dtype == dtype for o in outs)
        for a, b in zip(outs, plain):
            assert torch.equal(a, b)
