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


#: mmpretrain dataset types that read class sub-folders when they have no ann_file.
FOLDER_DATASETS = ('CustomDataset', 'ImageNet', 'ImageNet21k')


def dataset_num_classes(dataset: dict) -> tuple[int, str] | None:
    """Number of classes a classification dataset config will yield, if knowable.

    ``metainfo.classes`` (a sequence, or a file with one class a line) wins; otherwise
    an mmpretrain folder dataset (``CustomDataset`` / ``ImageNet`` without
    ``ann_file``) has one class per sub-folder of ``data_root/data_prefix`` (or of
    ``data_root/split``).

    Returns:
        ``(count, where it comes from)``, or ``None`` when the config does not tell
        (annotation files, other dataset types, remote or missing folders).
    """
    classes = (dataset.get('metainfo') or {}).get('classes')
    if isinstance(classes, str):
        path = _join(dataset.get('data_root'), classes)
        if _is_remote(path) or not osp.isfile(path):
            return None
        with open(path) as f:
            return sum(1 for line in f if line.strip()), f'classes listed in {path}'
    if classes is not None:
        return len(classes), 'metainfo.classes'
    kind = str(dataset.get('type', '')).split('.')[-1]
    if kind not in FOLDER_DATASETS or dataset.get('ann_file') or not dataset.get(
            'with_label', True):
        return None
    prefix = dataset.get('data_prefix') or ''
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path') or ''
    split = dataset.get('split') or ''
    root = dataset.get('data_root') or ''
    if kind != 'CustomDataset' and split:
        if osp.isfile(osp.join(root, 'meta', f'{split}.txt')):
            return None  # ImageNet(split=...) then reads meta/<split>.txt
        prefix = prefix or split
    folder = _join(root, prefix) if prefix else root
    if not folder or _is_remote(folder) or not osp.isdir(folder):
        return None
    count = sum(1 for entry in os.scandir(folder) if entry.is_dir())
    return count, f'class folders in {folder}'


def check_num_classes(dataset: dict, model_cfg: dict, split: str) -> None:
    """Raise ``ValueError`` when a classifier's head and its dataset differ in classes.

    Example:
        >>> check_num_classes(dict(type='CustomDataset', metainfo=dict(classes=['a', 'b'])),
        ...                   dict(head=dict(num_classes=3)), 'train')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: train dataset has 2 classes (metainfo.classes) but ...num_classes is 3; ...
    """
    head = model_cfg.get('head')
    if not isinstance(head, dict) or not isinstance(head.get('num_classes'), int):
        return
    found = dataset_num_classes(dataset)
    if found is None:
        return
    count, source = found
    if count != head['num_classes']:
        raise ValueError(
            f'{split} dataset has {count} classes ({source}) but model.head.num_classes '
            f'is {head["num_classes"]}; set model.head.num_classes={count} (and '
            'data_preprocessor.num_classes) or fix the dataset')


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
        ValueError: an empty annotation file, neck/backbone channels that differ, or a
            classifier head whose ``num_classes`` differs from its dataset's classes.
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
                check_num_classes(dataset, model, name.replace('_dataloader', ''))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        check_neck_channels(model)
