"""Deploy backbones under ``torch.compile`` (TorchInductor): same outputs as eager.

Inductor traces the functional path (``inference_fast_path()`` is False while
compiling) and, with ``freezing``, turns weights into constants; the compiled
backbone must give the eager deploy model's features and still follow later
changes of the input size (a recompile, not a wrong answer).
"""
import copy

import pytest
import torch

from conftest import randomise_bn
from mmsfr.models import CondenseNetV2, SFRShuffleNetV2
from mmsfr.models.layers import condense_model
from mmsfr.testing import rel_diff


def deployed(model):
    randomise_bn(model)
    condense_model(model, 1.0)
    model.eval()
    model.switch_to_deploy()
    return model


@pytest.mark.parametrize('family', ['condensenetv2', 'sfr-shufflenetv2'])
def test_deploy_backbone_compiles_and_matches_eager(family):
    torch.manual_seed(0)
    if family == 'condensenetv2':
        arch = dict(depths=(1, 2, 2), growths=(8, 8, 16), groups=4, condense_factor=4,
                    sparse_factor=4, hs_from=1, se_from=2)
        model = deployed(CondenseNetV2(arch, out_indices=(0, 1, 2)))
    else:
        model = deployed(SFRShuffleNetV2('0.5x', out_indices=(1, 2, 3)))
    compiled = torch.compile(copy.deepcopy(model), dynamic=False,
                             options={'freezing': True})
    for shape in ((1, 3, 64, 64), (2, 3, 48, 80)):
        x = torch.rand(shape)
        with torch.inference_mode():
            eager, got = model(x), compiled(x)
        assert len(got) == len(eager)
        for a, b in zip(got, eager):
            assert a.shape == b.shape and rel_diff(a, b) < 1e-5
