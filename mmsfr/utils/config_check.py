"""Checks run by tools/train.py and tools/test.py before anything heavy starts.

Each problem gets one clear error naming the bad value, instead of a crash deep inside
a dataloader worker or a shape mismatch at the first forward.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import os.path as osp

from mmengine.config import Config

from .cli import one_line

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
                try:
                    with open(path, encoding='utf-8') as f:
                        content = json.load(f)
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise ValueError(f'{split} dataset: annotation file {path} is not valid '
                                     f'JSON ({one_line(err)}); restore or regenerate it'
                                     ) from err
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
    folder = class_folder_root(dataset)
    if folder is None:
        return None
    count = sum(1 for entry in os.scandir(folder) if entry.is_dir())
    return count, f'class folders in {folder}'


def class_folder_root(dataset: dict) -> str | None:
    """The folder whose sub-folders are the classes of an mmpretrain folder dataset
    (``CustomDataset`` / ``ImageNet`` without ``ann_file``), if it exists locally."""
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
    return folder


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


#: Image file extensions mmpretrain's folder datasets read.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff')


def _check_class_folders(dataset: dict, split: str) -> None:
    """A folder dataset whose class folders are all empty: name the folder."""
    folder = class_folder_root(dataset)
    if folder is None:
        return
    classes = [e for e in os.scandir(folder) if e.is_dir()]
    if not classes:
        raise ValueError(f'{split} dataset: {folder} has no class folders; put one folder '
                         'of images per class there or fix data_root / data_prefix')
    for entry in classes:
        for _, _, files in os.walk(entry.path):
            if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
                return
    raise ValueError(f'{split} dataset: the {len(classes)} class folders in {folder} hold no '
                     f'images ({", ".join(IMAGE_EXTENSIONS)}); put the images there or fix '
                     'data_root / data_prefix')


def check_images(dataset: dict, split: str) -> None:
    """Read a dataset's annotations and check that it lists images, all present.

    The dataset is built without its pipeline (annotations only), in the current
    default scope.

    Raises:
        ValueError: the dataset cannot be read (naming it), lists no image, or lists
            images that are missing (naming the first and the count).
    """
    from mmengine.registry import DATASETS

    if 'type' not in dataset:
        return
    _check_class_folders(dataset, split)
    cfg = copy.deepcopy(dict(dataset))
    cfg['pipeline'] = []
    cfg.pop('lazy_init', None)
    source = cfg.get('ann_file') or cfg.get('data_root') or cfg.get('type')
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress lines
            built = DATASETS.build(cfg)
    except (RuntimeError, ValueError, OSError, KeyError, AssertionError) as err:
        raise ValueError(f'{split} dataset ({source}) cannot be read: {one_line(err)}'
                         ) from err
    get_info = getattr(built, 'get_data_info', None)
    if get_info is None:
        return
    if len(built) == 0:
        raise ValueError(f'{split} dataset ({source}) lists no images; fix its annotation '
                         'file or data_root / data_prefix')
    infos = (get_info(i) for i in range(len(built)))
    paths = [info.get('img_path') for info in infos if isinstance(info, dict)]
    missing = [p for p in paths if isinstance(p, str) and not _is_remote(p)
               and not osp.isfile(p)]
    if missing:
        raise ValueError(f'{split} dataset ({source}): {len(missing)} of {len(paths)} images '
                         f'are missing, e.g. {missing[0]}; restore them or fix data_root / '
                         'data_prefix')


def check_config(cfg: Config, path: str = '', training: bool = True) -> None:
    """Run every check for a train (or test) run of ``cfg``.

    Raises:
        FileNotFoundError: a dataset file/folder or the pretrained weights are missing.
        ValueError: an empty annotation file, neck/backbone channels that differ, or a
            classifier head whose ``num_classes`` differs from its dataset's classes,
            or (testing) test images that are missing (:func:`check_images`).
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
        if not training and cfg.get('test_dataloader'):
            for dataset in _datasets(cfg.test_dataloader.get('dataset')):
                check_images(dataset, 'test')


def check_resume_checkpoint(cfg: Config, path: str = '') -> None:
    """Before ``--resume``: the checkpoint reads (weights-only) and fits the model.

    The checkpoint is ``cfg.load_from``, or with ``--resume`` alone the latest one of the
    work dir (none: training starts afresh, as mmengine does). The config's model is
    built and the checkpoint's weights loaded into it strictly. The file is read the
    restricted way (:func:`~mmsfr.checkpoint.read_checkpoint`) on every torch.

    Raises:
        UserError: naming the checkpoint and the config when it cannot be read or was
            trained with another model.
    """
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import find_latest_checkpoint

    from ..checkpoint import CheckpointError, load_weights, read_state_dict
    from .cli import UserError

    ckpt = cfg.get('load_from')
    if ckpt is None:
        ckpt = find_latest_checkpoint(cfg.work_dir) if osp.isdir(cfg.work_dir) else None
    if ckpt is None or _is_remote(str(ckpt)):
        return
    state_dict = read_state_dict(ckpt, what='--resume checkpoint')
    model_cfg = copy.deepcopy(cfg.model)
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg['backbone']['init_cfg'] = None
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(model_cfg)
    try:
        load_weights(model, state_dict, f'--resume checkpoint {ckpt}',
                     f'the model of {path or "the config"}',
                     hint='resume with the config it was trained with, or start afresh '
                     'in another --work-dir')
    except CheckpointError:
        raise
    except ValueError as err:  # the model's own checks (e.g. train-time vs deploy form)
        raise UserError(f'--resume checkpoint {ckpt}: {one_line(err)}') from err
