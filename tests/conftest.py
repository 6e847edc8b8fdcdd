"""Shared test helpers: the parity fixtures and small models."""
from __future__ import annotations

import argparse
import io
import lzma
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmsfr  # noqa: F401  (registers models, allows mmengine checkpoints)

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    """The parity fixtures: $MMSFR_FIXTURES or ../shared/fixtures beside the repo."""
    return Path(os.environ.get('MMSFR_FIXTURES', REPO.parent / 'shared' / 'fixtures'))


def load_fixture(name: str):
    """Load an xz-compressed fixture (reference checkpoints pickle a Namespace)."""
    path = fixtures_dir() / name
    if not path.exists():
        if os.environ.get('MMSFR_REQUIRE_FIXTURES'):
            raise FileNotFoundError(f'parity fixture {path} is missing')
        pytest.skip(f'parity fixture {path} not available')
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(io.BytesIO(lzma.open(path).read()), map_location='cpu')


def fixture_path(name: str) -> Path:
    load_fixture(name)  # skip / fail consistently
    return fixtures_dir() / name


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial, deterministic BN statistics and affine parameters.

    Conversion and parity checks need them: default BN (mean 0, var 1, weight 1 or,
    for SFR, 0) would hide mistakes in the channel bookkeeping.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
