"""Shared test helpers: the parity fixtures and small models."""
from __future__ import annotations

import argparse
import io
import lzma
import os
from pathlib import Path

import pytest
import torch

import mmsfr  # noqa: F401  (registers models, allows mmengine checkpoints)
from mmsfr.testing import randomise_bn  # noqa: F401  (used by the test modules)

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
