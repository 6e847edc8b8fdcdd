"""Checks run by tools/train.py and tools/test.py before anything heavy starts.

Each problem gets one clear error naming the bad value, instead of a crash deep inside
a dataloader worker or a shape mismatch at the first forward.
"""
from __future__ import annotations

import json
import os
import os.path as osp

from mmengine.config import Config

#: Parse annotation files up to this size to check they hold images.
_MAX_PARSED_ANN_BYTES = 20 * 1024 * 1024

CHECKPOINT_HELP = (
    'Get it as checkpoints/README.md explains (convert the released weights with '
    'tools/model_converters/official_to_mmsfr.py, or pretrain and run '
    'tools/convert_to_deploy.py), or train from scratch with '
    '--cfg-options model.backbone.init_cfg=None')


def _is_remote(path: str) -> bool:
    return '://' in path


def check_pretrained(init_cfg) -> None:
    """Raise ``FileNotFoundError`` when a ``Pretrained`` init points to a missing file."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    for item in cfgs:
        if not item or item.get('type') != 'Pretrained':
            continue
        path = item.get('checkpoint')
        if path and not _is_remote(path) and not osp.exists(path):
            raise FileNotFoundError(f'pretrained backbone weights {path} not found. '
                                    + CHECKPOINT_HELP)


def _datasets(cfg: dict):
    """Yield the leaf dataset configs of (possibly wrapped) dataset configs."""
    if cfg is None:
        return
    if 'datasets' in cfg:
        for sub in cfg['datasets']:
            yield from _datasets(sub)
    elif 'dataset' in cfg:
        yield from _datasets(cfg['dataset'])
    else:
        yield cfg


def _join(root: str | None, path: str) -> str:
    return path if not root or osp.isabs(path) or _is_remote(path) else osp.join(root, path)


def check_dataset(dataset: dict, split: str) -> None:
    """Check that a dataset config's root, annotation file and image folder exist."""
    root = dataset.get('data_root')
    if root and not _is_remote(root) and not osp.isdir(root):
        raise FileNotFoundError(f'{split} dataset: data_root {root} does not exist')
    ann = dataset.get('ann_file')
    if ann:
        path = _join(root, ann)
        if not _is_remote(path):
            if not osp.isfile(path):
                raise FileNotFoundError(f'{split} dataset: annotation file {path} does not exist')
            size = osp.getsize(path)
            if size == 0:
                raise ValueError(f'{split} dataset: annotation file {path} is empty')
            if path.endswith('.json') and size <= _MAX_PARSED_ANN_BYTES:
                with open(path) as f:
                    content = json.load(f)
                if isinstance(content, dict) and 'images' in content and not content['images']:
                    raise ValueError(f'{split} dataset: annotation file {path} lists no images')
    prefix = dataset.get('data_prefix')
    if isinstance(prefix, dict):
        for key in ('img', 'img_path'):
            if prefix.get(key):
                folder = _join(root, prefix[key])
                if not _is_remote(folder) and not osp.isdir(folder):
                    raise FileNotFoundError(f'{split} dataset: image folder {folder} '
                                            f'(data_prefix.{key}) does not exist')


def check_neck_channels(model_cfg: dict) -> None:
    """Raise ``ValueError`` when the neck's ``in_channels`` differ from the backbone's."""
    backbone, neck = model_cfg.get('backbone'), model_cfg.get('neck')
    if not backbone or not isinstance(neck, dict) or 'in_channels' not in neck:
        return
    from mmengine.registry import MODELS
    cfg = dict(backbone)
    cfg['init_cfg'] = None
    built = MODELS.build(cfg)
    channels = getattr(built, 'out_channels', None)
    if channels is None:
        return
    expected = list(neck['in_channels'])
    if list(channels) != expected:
        raise ValueError(
            f"neck in_channels {expected} do not match the backbone's output channels "
            f'{list(channels)} (backbone {backbone.get("type")}, out_indices '
            f'{getattr(built, "out_indices", "?")}); set neck.in_channels to the latter')


def check_config(cfg: Config, path: str = '', training: bool = True) -> None:
    """Run every check for a train (or test) run of ``cfg``.

    Raises:
        FileNotFoundError: a dataset file/folder or the pretrained weights are missing.
        ValueError: an empty annotation file, or neck/backbone channels that differ.
    """
    from mmengine.registry import DefaultScope

    model = cfg.get('model', {})
    if training:
        check_pretrained(model.get('backbone', {}).get('init_cfg'))
    loaders = ['train_dataloader', 'val_dataloader'] if training else ['test_dataloader']
    for name in loaders:
        loader = cfg.get(name)
        if loader:
            for dataset in _datasets(loader.get('dataset')):
                check_dataset(dataset, name.replace('_dataloader', ''))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        check_neck_channels(model)
