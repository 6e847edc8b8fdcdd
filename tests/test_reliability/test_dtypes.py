"""Half, bfloat16 and float64, with and without autocast: every model family runs its
inference path (``torch.no_grad``) as PyTorch runs the model with autograd (the
canonical ops), or raises the same error.

The reference is the same model with gradients enabled, which takes the canonical
ops everywhere (``mmsfr.models.layers.inference_fast_path``).
"""
from __future__ import annotations

import pytest
import torch

from mmsfr.models import (CondenseNet, CondenseNetV2, SFRShuffleNetV2, SFRShuffleNetV2Plus,
                          ShuffleNetV2, ShuffleNetV2Plus, condense_model)
from mmsfr.testing import randomise_bn, rel_diff

FAMILIES = [(CondenseNetV2, 'a'), (CondenseNet, 'a'), (ShuffleNetV2, '0.5x'),
            (ShuffleNetV2Plus, 'small'), (SFRShuffleNetV2, '0.5x'),
            (SFRShuffleNetV2Plus, 'small')]

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
#: (model dtype, input dtype, autocast dtype or None, tolerance of the inference path
#: against the canonical one, relative to the largest output).
CASES = [
    (F16, F16, None, 1e-2),
    (BF16, BF16, None, 5e-2),
    (F64, F64, None, 1e-10),
    (F32, F32, BF16, 1e-5),   # autocast: the ops PyTorch runs, in the dtypes it picks
    (F32, F32, F16, 1e-5),
    (F32, BF16, BF16, 1e-5),
    (F32, F16, BF16, 1e-5),
    (F32, F16, None, None),   # mismatched input: PyTorch raises
    (F32, BF16, None, None),
    (F32, F64, None, None),
]


def build(cls: type, arch: str, deploy: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = randomise_bn(cls(arch)).eval()
    if deploy:
        condense_model(model, 1.0)
        model.switch_to_deploy()
    return model


def run(model: torch.nn.Module, x: torch.Tensor, autocast: torch.dtype | None,
        grad: bool) -> list[torch.Tensor] | Exception:
    try:
        with torch.set_grad_enabled(grad), torch.autocast(
                'cpu', dtype=autocast or BF16, enabled=autocast is not None):
            return [out.detach() for out in model(x)]
    except Exception as err:  # noqa: BLE001  (the outcome is compared, not the type)
        return err


@pytest.mark.parametrize('deploy', [False, True], ids=['train-time', 'deploy'])
@pytest.mark.parametrize('cls,arch', FAMILIES, ids=[c.__name__ for c, _ in FAMILIES])
def test_inference_path_runs_every_dtype_as_pytorch_would(cls, arch, deploy):
    model = build(cls, arch, deploy)
    x32 = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for model_dtype, input_dtype, autocast, tol in CASES:
        case = f'model {model_dtype}, input {input_dtype}, autocast {autocast}'
        model.to(model_dtype)
        x = x32.to(input_dtype)
        canonical = run(model, x, autocast, grad=True)
        fast = run(model, x, autocast, grad=False)
        if tol is None:  # PyTorch refuses the input: the same error, not another one
            assert isinstance(canonical, RuntimeError), case
            assert type(fast) is type(canonical) and str(fast) == str(canonical), case
            continue
        assert not isinstance(canonical, Exception), f'{case}: {canonical}'
        assert not isinstance(fast, Exception), f'{case}: {fast}'
        assert [o.dtype for o in fast] == [o.dtype for o in canonical], case
        for a, b in zip(fast, canonical):
            assert a.shape == b.shape, case
            assert rel_diff(a.double(), b.double()) <= tol, case
