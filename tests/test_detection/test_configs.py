"""Every config builds; detector configs run loss and predict; backbone swaps work."""
import copy
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS as DET_MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import DefaultScope, MODELS
from mmengine.structures import InstanceData

from conftest import REPO

DET_CONFIGS = sorted(p.relative_to(REPO) for p in (REPO / 'configs').glob('*.py'))
DEMO_CONFIGS = sorted(p.relative_to(REPO) for p in (REPO / 'configs/demo').glob('*.py'))
PRETRAIN_CONFIGS = sorted(p.relative_to(REPO) for p in (REPO / 'configs/pretrain').rglob('*.py')
                          if '_base_' not in p.parts)
FRAGMENTS = sorted((REPO / 'configs/_base_/backbones').glob('*.py'))


def _build(cfg_path):
    cfg = Config.fromfile(str(REPO / cfg_path))
    if cfg.model.get('backbone', {}).get('init_cfg') is not None:
        cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return cfg, MODELS.build(cfg.model)


def test_twenty_detector_configs_exist():
    names = {p.stem for p in DET_CONFIGS}
    for det in ('retinanet', 'faster_rcnn'):
        for bb in ('condensenetv2_a', 'condensenetv2_b', 'condensenetv2_c', 'shufflenetv2_x0_5',
                   'shufflenetv2_x1_0', 'shufflenetv2_x1_5', 'sfr_shufflenetv2_x0_5',
                   'sfr_shufflenetv2_x1_0', 'sfr_shufflenetv2_x1_5', 'mobilenetv2'):
            assert f'{det}_{bb}' in names


@pytest.mark.parametrize('cfg_path', PRETRAIN_CONFIGS, ids=str)
def test_pretrain_configs_build(cfg_path):
    _, model = _build(cfg_path)
    assert model.backbone is not None


def _batch(size=(96, 128), num_gt=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    sample = DetDataSample(metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size,
                                         scale_factor=(1.0, 1.0), batch_input_shape=size))
    xy = torch.rand(num_gt, 2, generator=g) * torch.tensor([w / 2, h / 2])
    wh = torch.rand(num_gt, 2, generator=g) * torch.tensor([w / 2, h / 2]) + 8
    sample.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                       labels=torch.randint(0, 3, (num_gt,), generator=g))
    img = torch.randint(0, 255, (3, h, w), generator=g, dtype=torch.uint8)
    return dict(inputs=[img], data_samples=[sample])


@pytest.mark.parametrize('cfg_path', DET_CONFIGS + DEMO_CONFIGS, ids=str)
def test_detector_loss_and_predict(cfg_path):
    cfg, model = _build(cfg_path)
    data = model.data_preprocessor(_batch(), training=True)
    model.train()
    losses = model(**data, mode='loss')
    total = sum(v.sum() for k, v in losses.items() if 'loss' in k
                for v in (v if isinstance(v, list) else [v]))
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(_batch(), training=False), mode='predict')
    assert len(preds) == 1 and 'bboxes' in preds[0].pred_instances


@pytest.mark.parametrize('fragment', FRAGMENTS, ids=lambda p: p.stem)
def test_fragment_in_channels_match_backbone_metadata(fragment):
    cfg = Config.fromfile(str(fragment))
    backbone = copy.deepcopy(cfg.mmsfr_backbone)
    backbone.pop('_delete_')
    backbone['init_cfg'] = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = DET_MODELS.build(backbone)
    model.eval()  # (mmdet's MobileNetV2.train() returns None: no chaining)
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == list(cfg.mmsfr_in_channels)
    if hasattr(model, 'out_channels'):
        assert list(model.out_channels) == list(cfg.mmsfr_in_channels)
        assert list(model.out_strides) == [4, 8, 16, 32]


@pytest.mark.parametrize('detector', ['mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
                                      'mmdet::atss/atss_r50_fpn_1x_coco.py'])
def test_backbone_swap_into_any_detector(tmp_path, detector):
    fragment = REPO / 'configs/_base_/backbones/condensenetv2_a.py'
    user_cfg = tmp_path / 'my_detector.py'
    user_cfg.write_text(
        f"_base_ = ['{detector}', '{fragment.as_posix()}']\n"
        'model = dict(data_preprocessor={{_base_.mmsfr_data_preprocessor}},\n'
        '             backbone={{_base_.mmsfr_backbone}},\n'
        '             neck=dict(in_channels={{_base_.mmsfr_in_channels}}))\n')
    cfg, model = _build(user_cfg)
    assert type(model.backbone).__name__ == 'CondenseNetV2'
    assert cfg.model.data_preprocessor.bgr_to_rgb is True
    data = model.data_preprocessor(_batch(), training=True)
    model.train()
    losses = model(**data, mode='loss')
    values = [t for k, v in losses.items() if 'loss' in k
              for t in (v if isinstance(v, list) else [v])]
    assert values and all(torch.isfinite(t).all() for t in values)


def test_input_not_multiple_of_32_runs_with_mmdet_padding():
    _, model = _build('configs/retinanet_condensenetv2_c.py')
    model.eval()
    data = model.data_preprocessor(_batch(size=(70, 90)), training=False)
    assert data['inputs'].shape[-2:] == (96, 96)  # padded to the size divisor
    feats = model.backbone(data['inputs'])
    assert [f.shape[-1] for f in feats] == [96 // s for s in model.backbone.out_strides]
    with torch.no_grad():
        preds = model(**data, mode='predict')
    assert preds[0].pred_instances.bboxes.shape[1] == 4
