"""torch's TorchScript-based ONNX exporter (``dynamo=False``) on mmsfr deploy models.

MMDeploy and most deployment scripts drive this exporter. It turns ``index_add`` into
a ``ScatterElements`` without a reduction, which overwrites where SFR indices repeat;
the SFR exports through :class:`~mmsfr.models.layers.condense.ChannelScatterAdd`,
whose symbolic sums them. Checked with released-format weights (where indices repeat)
and with random deploy models whose SFR indices repeat.
"""
from __future__ import annotations

import copy
import inspect
import lzma
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import mmsfr  # noqa: F401  (registers the models)
from mmsfr.models import (CondenseNet, CondenseNetV2, SFRShuffleNetV2, SFRShuffleNetV2Plus,
                          ShuffleNetV2, ShuffleNetV2Plus, condense_model)
from mmsfr.models.layers import SparseFeatureReactivation

from conftest import fixture_path, randomise_bn
from mmsfr.testing import rel_diff

DENSE = dict(depths=(1, 2, 2), growths=(8, 8, 16), groups=4, condense_factor=4,
             sparse_factor=4, hs_from=1, se_from=2)
SHUFFLE = dict(stage_channels=(16, 32, 64), stage_blocks=(1, 2, 2), stem_channels=8,
               last_channels=64)
PLUS = dict(stage_channels=(16, 32, 48, 64), stage_blocks=(1, 2, 2, 1), stem_channels=8,
            last_channels=64, unit_choices=(0, 1, 3, 2, 3, 0))
#: Every family, small; the SFR ShuffleNets with grouped SFR convs (G = S < c / 2).
FAMILIES = {
    'CondenseNet': lambda: CondenseNet(dict(DENSE, sparse_factor=None), out_indices=(2,)),
    'CondenseNetV2': lambda: CondenseNetV2(DENSE, out_indices=(2,)),
    'ShuffleNetV2': lambda: ShuffleNetV2(SHUFFLE, layout='torchvision', out_indices=(4,)),
    'ShuffleNetV2Plus': lambda: ShuffleNetV2Plus(PLUS, out_indices=(4,)),
    'SFRShuffleNetV2': lambda: SFRShuffleNetV2(dict(SHUFFLE, sfr_factors=(4, 8, 8)),
                                               out_indices=(4,)),
    'SFRShuffleNetV2Plus': lambda: SFRShuffleNetV2Plus(dict(PLUS, sfr_factors=(4, 4, 8, 8)),
                                                       out_indices=(4,)),
}


class Logits(torch.nn.Module):
    """An mmpretrain classifier as ``image -> logits`` (or a backbone's last output)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, 'data_preprocessor'):
            return self.model(x, mode='tensor')
        return self.model(x)[-1]


def legacy_export(module: torch.nn.Module, x: torch.Tensor, path, opset: int = 17) -> None:
    # torch >= 2.5 selects this exporter with dynamo=False (the default from 2.9 is the
    # dynamo-based one); earlier releases have only this one.
    legacy = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the exporter's deprecation notice
        torch.onnx.export(module, (x,), str(path), **legacy, opset_version=opset,
                          input_names=['input'], output_names=['output'],
                          dynamic_axes={'input': {0: 'batch', 2: 'height', 3: 'width'}})


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(None, {'input': x.numpy()})[0]


def rel(a: np.ndarray, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|`` of an onnxruntime output and PyTorch's."""
    return rel_diff(torch.from_numpy(a), b)


def repeat_sfr_indices(model: torch.nn.Module, seed: int = 0) -> int:
    """Give every deploy SFR random indices with repeats; return how many repeat."""
    gen = torch.Generator().manual_seed(seed)
    repeats = 0
    for m in model.modules():
        if isinstance(m, SparseFeatureReactivation):
            m.index.copy_(torch.randint(0, m.out_channels, m.index.shape, generator=gen))
            repeats += m.index.numel() - m.index.unique().numel()
    return repeats


def test_released_condensenetv2_a_exports_exactly(tmp_path):
    from mmsfr.apis import convert_official, init_model
    src = tmp_path / 'converted.pth.tar'
    src.write_bytes(lzma.open(fixture_path('cdnv2_a_converted.pth.tar.xz')).read())
    meta = convert_official('condensenetv2_a', src, tmp_path / 'deploy.pth')
    model = init_model(meta['config'], tmp_path / 'deploy.pth')
    indices = [m.index for m in model.modules() if isinstance(m, SparseFeatureReactivation)]
    assert any(i.numel() > i.unique().numel() for i in indices)  # the case that broke
    module = Logits(model).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    legacy_export(module, x, tmp_path / 'a.onnx')
    ops = {n.op_type for n in onnx.load(str(tmp_path / 'a.onnx')).graph.node}
    assert 'ScatterElements' in ops
    with torch.no_grad():
        for size in ((224, 224), (160, 192)):
            x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
            assert rel(run_onnx(tmp_path / 'a.onnx', x), module(x)) < 1e-4


def deployed(model: torch.nn.Module) -> torch.nn.Module:
    randomise_bn(model)
    condense_model(model, 1.0)
    model.eval()
    model.switch_to_deploy()
    return model


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_every_family_exports_exactly_with_repeated_sfr_indices(family, tmp_path):
    torch.manual_seed(0)
    model = deployed(FAMILIES[family]())
    has_sfr = any(isinstance(m, SparseFeatureReactivation) for m in model.modules())
    assert (repeat_sfr_indices(model) > 0) == has_sfr
    module = Logits(model).eval()
    legacy_export(module, torch.rand(1, 3, 64, 64), tmp_path / 'm.onnx')
    with torch.no_grad():
        for shape in ((1, 3, 64, 64), (2, 3, 96, 80)):
            x = torch.rand(*shape)
            assert rel(run_onnx(tmp_path / 'm.onnx', x), module(x)) < 1e-4


def test_an_opset_without_scatter_reduction_is_refused(tmp_path):
    model = Logits(deployed(CondenseNetV2(DENSE, out_indices=(2,)))).eval()
    with pytest.raises(Exception, match=r"reduction='add', which needs ONNX opset >= 16; "
                       r'got opset_version=15'):
        legacy_export(copy.deepcopy(model), torch.rand(1, 3, 64, 64), tmp_path / 'm.onnx',
                      opset=15)
