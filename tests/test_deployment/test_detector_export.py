"""Whole detectors through ONNX: export (tools/deployment/export_onnx.py), evaluation in
onnxruntime with mmdet's post-processing (tools/deployment/test_onnx.py).

A RetinaNet with a CondenseNetV2 backbone (the demo config on a few generated shapes
images, random deploy weights, every box kept) is exported whole and run over the
test set in onnxruntime; its detections and its COCO mAP must be those of the PyTorch
model (``tools/test.py``). Faster R-CNN exports its first stage (backbone, neck, RPN
head), the part mmdet's tensor mode computes without data samples.
"""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

import mmsfr  # noqa: F401  (registers the models)
from mmsfr.apis import build_model
from mmsfr.deployment import ExportModule, export_verified
from mmsfr.testing import randomise_bn, tiny_demo_config

from conftest import REPO

EXPORT = 'tools/deployment/export_onnx.py'
TEST_ONNX = 'tools/deployment/test_onnx.py'
FASTER_DEMO = 'configs/demo/faster_rcnn_condensenetv2_demo.py'


def run_tool(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """The tiny RetinaNet demo: config, a random deploy checkpoint and its export."""
    root = tmp_path_factory.mktemp('retinanet')
    config = tiny_demo_config(root, train=2, val=6, size=96)
    torch.manual_seed(0)
    model = randomise_bn(build_model(config))  # non-trivial BN in the backbone
    torch.save({'state_dict': model.state_dict()}, root / 'det.pth')
    out = root / 'retinanet.onnx'
    run = run_tool(EXPORT, str(config), str(root / 'det.pth'), str(out), '--shape', '128',
                   '--dynamic-size')
    assert run.returncode == 0, run.stderr[-3000:]
    return config, root / 'det.pth', out, run.stdout


def test_whole_retinanet_exports_verified_at_two_sizes(demo):
    _, _, out, text = demo
    assert 'model: RetinaNet (CondenseNetV2 backbone): image -> cls_score0' in text
    names = [o.name for o in onnx.load(str(out)).graph.output]
    assert names == [f'cls_score{i}' for i in range(5)] + [f'bbox_pred{i}' for i in range(5)]
    rows = [line.split() for line in text.splitlines() if line.startswith('dynamic ')]
    sizes = {row[1] for row in rows}
    assert sizes == {'1x3x128x128', '2x3x128x128', '1x3x160x144', '2x3x160x144'}
    assert all(float(row[5]) <= 1e-4 and row[6] == 'ok' for row in rows)


def test_onnxruntime_detections_equal_pytorch(demo):
    """Every test image: the same boxes and scores (so the same mAP, whatever its value;
    with random weights it is small, 0.002 here)."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    from mmsfr.apis import init_model
    from mmsfr.deployment.evaluate import OnnxDetector

    config, checkpoint, out, _ = demo
    model = init_model(config, checkpoint)
    detector = OnnxDetector(init_model(config), out)  # its weights are not used
    with DefaultScope.overwrite_default_scope('mmdet'):
        loader = Runner.build_dataloader(model.cfg.test_dataloader)
        batches = list(loader)
    images = 0
    for batch in batches:
        with torch.no_grad():
            expected = model.test_step(batch)
        got = detector.predict(batch)
        for e, g in zip(expected, got, strict=True):
            e, g = e.pred_instances, g.pred_instances
            assert len(g) == len(e) > 0
            np.testing.assert_allclose(g.scores.sort().values, e.scores.sort().values,
                                       atol=1e-4)
            # Each box has its twin in the other set (order-free: near-equal scores may
            # sort either way), with the same label.
            close = ((g.bboxes[:, None] - e.bboxes[None]).abs().amax(-1) <= 1e-2) & (
                g.labels[:, None] == e.labels[None])
            assert close.any(1).all() and close.any(0).all()
            images += 1
    assert images == len(loader.dataset) == 6


def bbox_map(text: str) -> float:
    match = re.search(r'bbox_mAP: (-?[\d.]+)', text)
    assert match, text[-3000:]
    return float(match[1])


def test_test_onnx_tool_gives_pytorch_map(demo):
    config, checkpoint, out, _ = demo
    onnx_run = run_tool(TEST_ONNX, str(config), str(out))
    assert onnx_run.returncode == 0, onnx_run.stderr[-3000:]
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all' in onnx_run.stdout
    torch_run = run_tool('tools/test.py', str(config), str(checkpoint), '--work-dir',
                         str(out.parent / 'test'))
    assert torch_run.returncode == 0, torch_run.stderr[-3000:]
    assert abs(bbox_map(onnx_run.stdout) - bbox_map(torch_run.stdout + torch_run.stderr)) <= 0.002


def test_test_onnx_tool_refuses_a_backbone_graph(demo, tmp_path):
    config, checkpoint, _, _ = demo
    backbone = tmp_path / 'backbone.onnx'
    run = run_tool(EXPORT, str(config), str(checkpoint), str(backbone), '--shape', '128',
                   '--backbone-only')
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'RetinaNet: image -> feat2, feat3, feat4' in run.stdout
    refused = run_tool(TEST_ONNX, str(config), str(backbone))
    assert refused.returncode != 0
    assert "output 'feat2' of the graph is not a per-level head output" in refused.stderr


def test_test_onnx_tool_names_a_damaged_graph_in_one_line(demo, tmp_path):
    config, _, graph, _ = demo
    damaged = tmp_path / 'damaged.onnx'
    damaged.write_bytes(graph.read_bytes()[:4096])  # a download cut short
    refused = run_tool(TEST_ONNX, str(config), str(damaged))
    assert refused.returncode == 1 and 'Traceback' not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, refused.stderr[-2000:]
    assert errors[0].startswith(f'error: onnxruntime cannot load {damaged}: ')


def test_faster_rcnn_exports_its_first_stage(tmp_path):
    torch.manual_seed(0)
    module = ExportModule(build_model(FASTER_DEMO).eval())
    assert module.target == 'first stage'
    levels = range(5)
    assert module.output_names == (*(f'feat{i}' for i in levels),
                                   *(f'rpn_cls_score{i}' for i in levels),
                                   *(f'rpn_bbox_pred{i}' for i in levels))
    result = export_verified(module, tmp_path / 'faster.onnx', (96, 96), dynamic_size=True)
    assert result.output_names == module.output_names
    assert max(r.max_rel_diff for r in result.reports) <= 1e-4


def test_counting_head_outputs_leaves_the_model_as_it_was():
    """ExportModule runs the head once to name its outputs: in eval mode, so a BatchNorm
    in a training-mode head keeps its running statistics."""
    model = build_model('configs/demo/retinanet_condensenetv2_demo.py')
    head = model.bbox_head
    norm = torch.nn.BatchNorm2d(head.in_channels)
    head.cls_convs[0] = torch.nn.Sequential(norm, head.cls_convs[0])
    assert model.training
    module = ExportModule(model)
    assert module.output_names[:2] == ('cls_score0', 'cls_score1')
    assert norm.training and int(norm.num_batches_tracked) == 0
    assert not norm.running_mean.any()
