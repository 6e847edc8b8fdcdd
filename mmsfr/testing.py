"""Helpers for tests, benchmarks and checks: deterministic non-trivial model
states, the parity measure, a tiny demo run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .utils.tool_setup import config_root

__all__ = ['randomise_bn', 'rel_diff', 'tiny_demo_config']


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial, deterministic statistics and affine parameters.

    Every ``_BatchNorm`` (``BatchNorm2d``, ``SyncBatchNorm``, ...) is set; the values
    depend on the seed and the order of the norms only, not on their device or dtype
    (they are drawn on the CPU and copied).

    Conversion, parity and speed checks need them: default BN (mean 0, var 1, weight 1
    or, for SFR, 0) would hide mistakes in the channel bookkeeping and make SFR a no-op.

    Args:
        model: Modified in place.
        seed: Seed of the generator the values are drawn from.

    Returns:
        ``model``.

    Example:
        >>> bn = randomise_bn(nn.BatchNorm2d(4))
        >>> bool((bn.running_var >= 0.5).all())
        True
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                values = (torch.rand(n, generator=g) - 0.5, torch.rand(n, generator=g) + 0.5,
                          torch.rand(n, generator=g) + 0.5,
                          torch.rand(n, generator=g) * 0.4 - 0.2)
                targets = (m.running_mean, m.running_var, m.weight, m.bias)
                for target, value in zip(targets, values):
                    if target is not None:  # no running statistics / affine parameters
                        target.copy_(value)  # on the norm's device, in its dtype
    return model


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of ``a`` and ``b``, relative to ``b``'s largest value.

    The measure every parity check of mmsfr uses: ``max |a - b| / max |b|``. An
    all-zero ``b`` gives ``inf`` or ``nan``, which fails every ``< tolerance`` check:
    a reference that is all zeros proves nothing.

    Args:
        a: The tensor under test.
        b: The reference, same shape as ``a``.

    Returns:
        The relative difference as a float.

    Example:
        >>> round(rel_diff(torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0])), 6)
        0.25
    """
    return ((a - b).abs().max() / b.abs().max()).item()


#: The checkout holding ``tools/`` (the demo data generator is not shipped with the package).
_REPO = Path(__file__).resolve().parents[1]


def tiny_demo_config(work: Path, train: int, val: int, size: int, seed: int = 0) -> Path:
    """A RetinaNet demo run small enough for a test: data, then its config.

    Generates ``train`` + ``val`` shapes images of ``size`` pixels under ``work/shapes``
    (``tools/misc/make_demo_coco.py``) and writes ``work/tiny_demo.py``: the demo config
    (``configs/demo/retinanet_condensenetv2_demo.py``) on that data, one epoch of batch 2
    with a validation at its end, no loader workers, a log line per iteration, and every
    box kept (an untrained detector scores low; COCO needs something to score).

    Returns:
        The config's path.

    Raises:
        RuntimeError: with the generator's error output when it fails.
    """
    data = Path(work) / 'shapes'
    made = subprocess.run([sys.executable, str(_REPO / 'tools/misc/make_demo_coco.py'), '--out',
                           str(data), '--train', str(train), '--val', str(val), '--size',
                           str(size), '--seed', str(seed)],
                          capture_output=True, text=True, timeout=600)
    if made.returncode != 0:
        raise RuntimeError(f'make_demo_coco.py failed: {made.stderr[-2000:]}')
    root = data.as_posix()
    cfg = Path(work) / 'tiny_demo.py'
    base = (config_root() / 'demo/retinanet_condensenetv2_demo.py').resolve()
    cfg.write_text(
        f"_base_ = ['{base.as_posix()}']\n"
        f"train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, "
        f"dataset=dict(data_root='{root}/'))\n"
        f"val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, "
        f"dataset=dict(data_root='{root}/'))\n"
        "test_dataloader = val_dataloader\n"
        f"val_evaluator = dict(ann_file='{root}/annotations/instances_val.json')\n"
        "test_evaluator = val_evaluator\n"
        "train_cfg = dict(max_epochs=1, val_interval=1)\n"
        "default_hooks = dict(logger=dict(interval=1))\n"
        "model = dict(test_cfg=dict(score_thr=0.0))\n")
    return cfg
