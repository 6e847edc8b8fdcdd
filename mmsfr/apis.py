"""High-level helpers: released-weight conversion and deploy conversion of files."""
from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from mmsfr.models.backbones.condensenet import convert_official_condensenet
from mmsfr.models.backbones.shufflenetv2 import (convert_official_shufflenetv2,
                                                 convert_official_shufflenetv2plus,
                                                 convert_torchvision_shufflenetv2)
from mmsfr.models.layers import condensing_layers, convert_to_deploy


@dataclass(frozen=True)
class OfficialModel:
    """A released model: how to map its keys and which configs load the result."""

    convert: Callable[[dict], dict]
    deploy_config: str
    train_config: str


def _cdn(family: str, arch: str) -> OfficialModel:
    base = f'configs/pretrain/{family}/{family}-{arch}'
    return OfficialModel(convert_official_condensenet, f'{base}_deploy_in1k.py',
                         f'{base}_8xb128_in1k.py')


#: Released checkpoints ``tools/model_converters/official_to_mmsfr.py`` understands.
OFFICIAL_MODELS: dict[str, OfficialModel] = {
    'condensenetv2_a': _cdn('condensenetv2', 'a'),
    'condensenetv2_b': _cdn('condensenetv2', 'b'),
    'condensenetv2_c': _cdn('condensenetv2', 'c'),
    'condensenet_v1_g4': _cdn('condensenet', 'v1-g4'),
    'condensenet_v1_g8': _cdn('condensenet', 'v1-g8'),
    # megvii ShuffleNet-Series releases ({'state_dict'} with `module.` keys) and
    # torchvision's shufflenet_v2_x* state_dicts. Nothing to condense: both config
    # fields name the same config (the torchvision ones: the *-tv layout configs).
    **{
        f'shufflenetv2_x{w}': OfficialModel(
            partial(convert_official_shufflenetv2, arch=f"{w.replace('_', '.')}x"),
            f'configs/pretrain/shufflenetv2/shufflenetv2-x{w}_8xb128_in1k.py',
            f'configs/pretrain/shufflenetv2/shufflenetv2-x{w}_8xb128_in1k.py')
        for w in ('0_5', '1_0', '1_5', '2_0')
    },
    **{
        f'shufflenetv2plus_{a}': OfficialModel(
            partial(convert_official_shufflenetv2plus, arch=arch),
            f'configs/pretrain/shufflenetv2/shufflenetv2plus-{a}_8xb128_in1k.py',
            f'configs/pretrain/shufflenetv2/shufflenetv2plus-{a}_8xb128_in1k.py')
        for a, arch in (('s', 'small'), ('m', 'medium'), ('l', 'large'))
    },
    **{
        f'torchvision_shufflenetv2_x{w}': OfficialModel(
            partial(convert_torchvision_shufflenetv2, arch=f"{w.replace('_', '.')}x"),
            f'configs/pretrain/shufflenetv2/shufflenetv2-x{w}-tv_8xb128_in1k.py',
            f'configs/pretrain/shufflenetv2/shufflenetv2-x{w}-tv_8xb128_in1k.py')
        for w in ('0_5', '1_0', '1_5', '2_0')
    },
}


def read_official_checkpoint(path: str | os.PathLike) -> tuple[dict, str]:
    """Read a released checkpoint without running arbitrary pickled code.

    Training-script checkpoints pickle an ``argparse.Namespace`` under ``args``; it is
    allow-listed for this one load only (``weights_only`` stays on).

    Returns:
        ``(state_dict, source)`` where source names the key used (``state_dict_ema``
        is preferred when present).
    """
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path}: not a checkpoint dict (got {type(ckpt).__name__})')
    for key in ('state_dict_ema', 'state_dict', 'model'):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key], key
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt, 'top level'
    raise ValueError(f'{path}: no state_dict found (keys: {sorted(ckpt)[:8]})')


def checkpoint_form(state_dict: dict) -> str:
    """``'train'`` when the weights hold LGC/SFR masks, else ``'deploy'``."""
    return 'train' if any(k.endswith('._mask') for k in state_dict) else 'deploy'


def check_not_input(dst: str | os.PathLike, src: str | os.PathLike | None) -> None:
    """Raise ``ValueError`` when the output path is the input file."""
    if src is not None and Path(dst).exists() and Path(dst).resolve() == Path(src).resolve():
        raise ValueError(f'refusing to overwrite the input file {src}; choose another output')


def atomic_save(obj: dict, dst: str | os.PathLike, src: str | os.PathLike | None = None) -> None:
    """``torch.save`` to a temporary file then rename: ``dst`` is complete or untouched.

    Raises:
        ValueError: when ``dst`` is the input file ``src``.
    """
    check_not_input(dst, src)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=dst.name, suffix='.tmp')
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def convert_official(model_name: str, src: str | os.PathLike,
                     dst: str | os.PathLike) -> dict:
    """Convert a released checkpoint into an mmsfr checkpoint at ``dst``.

    Returns:
        The ``meta`` written (model, form, source key, matching config).
    """
    if model_name not in OFFICIAL_MODELS:
        raise ValueError(f'unknown model {model_name!r}; valid models are '
                         f'{sorted(OFFICIAL_MODELS)}')
    check_not_input(dst, src)
    entry = OFFICIAL_MODELS[model_name]
    state_dict, source = read_official_checkpoint(src)
    converted = entry.convert(state_dict)
    form = checkpoint_form(converted)
    config = entry.train_config if form == 'train' else entry.deploy_config
    # Loading strictly into the matching model names arch/form mismatches clearly.
    build_from_config(config).load_state_dict(converted, strict=True)
    meta = dict(model=model_name, form=form, source_key=source, config=config)
    atomic_save({'meta': meta, 'state_dict': converted}, dst, src)
    return meta


def build_from_config(config: str | os.PathLike) -> torch.nn.Module:
    """Build (without pretrained init) the model of an mmsfr config, relative to the repo.

    Example:
        >>> model = build_from_config('configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py')
    """
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    path = Path(config)
    if not path.is_absolute() and not path.exists():
        path = Path(__file__).resolve().parents[1] / path
    cfg = Config.fromfile(str(path))
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        return MODELS.build(cfg.model)


def deploy_checkpoint(model: torch.nn.Module, dst: str | os.PathLike,
                      src: str | os.PathLike | None = None, meta: dict | None = None) -> None:
    """Convert ``model`` to its deploy form and save it; nothing is written on failure.

    Raises:
        ValueError: if ``model`` has no train-time part with a deploy form (no LGC/SFR
            layer, no module with a ``deploy`` flag still off, e.g. a ShuffleNet whose
            conv -> BN pairs are not folded yet).
    """
    pending = any(getattr(m, 'deploy', True) is False for m in model.modules())
    if not (pending or condensing_layers(model)):
        raise ValueError(f'{type(model).__name__} has no LGC/SFR layer and no module with '
                         'a deploy form left to convert: nothing to convert')
    convert_to_deploy(model)
    meta = dict(meta or {}, form='deploy')
    atomic_save({'meta': meta, 'state_dict': model.state_dict()}, dst, src)
