"""Shared test helpers: the parity fixtures and small models."""
from __future__ import annotations

import argparse
import io
import lzma
import os
import re
from pathlib import Path

import numpy as np
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
    data = io.BytesIO(lzma.open(path).read())
    if not hasattr(torch.serialization, 'safe_globals'):  # torch < 2.5: trusted test data
        return torch.load(data, map_location='cpu', weights_only=False)
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(data, map_location='cpu')


def fixture_path(name: str) -> Path:
    load_fixture(name)  # skip / fail consistently
    return fixtures_dir() / name


# ----------------------------------------------- shared by the tool and reliability tests
#: The small CIFAR-style CondenseNetV2 of the digits demo: train-time and deploy config.
DIGITS_TRAIN_CFG = REPO / 'configs/pretrain/condensenetv2/condensenetv2-cifar-digits_1xb64_digits.py'
DIGITS_DEPLOY_CFG = REPO / 'configs/pretrain/condensenetv2/condensenetv2-cifar-digits_deploy_digits.py'


def without_warnings(stderr: str) -> list[str]:
    """stderr lines minus Python warnings (``file:line: XWarning: ...`` + source line),
    which imports of the OpenMMLab stack print."""
    out, skip = [], False
    for line in stderr.strip().splitlines():
        if re.match(r'^\S+:\d+: \w*Warning: ', line):
            skip = True
            continue
        if skip and line.startswith(' '):
            continue
        skip = False
        out.append(line)
    return out


def write_image(path: Path, rng) -> None:
    """A random 16x16 RGB PNG at ``path`` (parents created)."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)


def write_digits_folder(root: Path) -> Path:
    """A 10-class folder dataset under ``root`` (``train``/``val``, one image a class)."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for label in range(10):
            write_image(root / split / str(label) / '0.png', rng)
    return root


def digits_config(path: Path, root: Path, extra: str = '') -> Path:
    """:data:`DIGITS_TRAIN_CFG` on the folder dataset at ``root``, no loader workers."""
    path.write_text(
        f"_base_ = ['{DIGITS_TRAIN_CFG.as_posix()}']\n"
        f"data_root = '{root.as_posix()}'\n"
        'train_dataloader = dict(num_workers=0, persistent_workers=False, '
        'dataset=dict(data_root=data_root))\n'
        'val_dataloader = dict(num_workers=0, persistent_workers=False, '
        'dataset=dict(data_root=data_root))\n'
        'test_dataloader = val_dataloader\n' + extra)
    return path


#: The smoke subset (``pytest -m smoke``), which ``make test-oldest`` runs on the oldest
#: supported stack: every backbone in both forms, released-weight parity on the
#: fixtures, the C++ kernels, the conversion tools, detectors' loss and predict, two
#: iterations through tools/train.py, checkpoint loading. Node-id prefixes under tests/.
SMOKE = (
    'test_package.py',
    'test_reliability/test_backbone_arguments.py',
    'test_models/test_condensenet.py::test_outputs_match_metadata',
    'test_models/test_condensenet.py::test_condensation_to_deploy_is_exact_for_whole_backbone',
    'test_models/test_condensenet.py::test_released_weights_reproduce_reference_logits',
    'test_models/test_condensenet.py::test_official_converter_tool_and_init_model',
    'test_models/test_condensenet.py::test_convert_to_deploy_refuses_unfinished',
    'test_models/test_shufflenetv2.py::test_output_shapes',
    'test_models/test_shufflenetv2.py::test_megvii_parity',
    'test_models/test_shufflenetv2.py::test_deploy_form_keeps_released_weight_parity',
    'test_models/test_sfr_shufflenet.py::test_output_shapes_and_placement',
    'test_models/test_sfr_shufflenet.py::test_condense_then_deploy_is_exact',
    'test_models/test_sfr_shufflenet.py::test_convert_to_deploy_tool_on_sfr_config',
    'test_models/test_native.py',
    'test_models/test_native_loading.py',
    'test_models/test_compile.py::test_compile_keeps_mmsfr_operators_in_one_graph',
    'test_detection/test_configs.py::test_detector_loss_and_predict[configs/demo/',
    'test_detection/test_configs.py::test_detector_loss_and_predict[configs/retinanet_condensenetv2_a.py]',
    'test_detection/test_configs.py::test_detector_loss_and_predict[configs/faster_rcnn_sfr_shufflenetv2_x0_5.py]',
    'test_detection/test_train_iterations.py',
    'test_utils/test_safe_checkpoint.py',
    'test_reliability/test_checkpoint_security.py::test_restricted_pickle_module',
    'test_reliability/test_checkpoint_security.py::test_train_refuses_a_gadget',
    'test_reliability/test_checkpoint_security.py::test_every_tool_refuses_the_gadget',
)


def pytest_configure(config):
    config.addinivalue_line('markers', 'smoke: the subset run on the oldest supported stack')


def pytest_collection_modifyitems(config, items):
    prefixes = tuple(f'tests/{p}' for p in SMOKE)
    for item in items:
        if item.nodeid.startswith(prefixes):
            item.add_marker(pytest.mark.smoke)
