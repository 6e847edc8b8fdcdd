"""tools/test.py takes mmdet 3.x's flags with mmdet's meaning: --out (pickle only),
--show / --show-dir / --wait-time (the DetVisualizationHook), --tta (the config's
tta_model and tta_pipeline), --cfg-options, --launcher, --work-dir.

Runs on 2 generated 64x64 validation images with the weights of a freshly built model.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

DEMO = REPO / 'configs/demo/retinanet_condensenetv2_demo.py'
FASTER_DEMO = REPO / 'configs/demo/faster_rcnn_condensenetv2_demo.py'
CLASSIFIER = REPO / 'configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py'


def _config(path: Path, base: Path, root: Path) -> Path:
    root = root.as_posix()
    path.write_text(
        f"_base_ = ['{base.as_posix()}']\n"
        f"val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, "
        f"dataset=dict(data_root='{root}/'))\n"
        "test_dataloader = val_dataloader\n"
        f"val_evaluator = dict(ann_file='{root}/annotations/instances_val.json')\n"
        "test_evaluator = val_evaluator\n"
        # An untrained detector scores low: keep every box so COCO has something to score.
        "model = dict(test_cfg=dict(score_thr=0.0))\n")
    return path


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """The tiny dataset, a RetinaNet demo config on it (it defines TTA), a Faster R-CNN
    demo config (no TTA) and a checkpoint of the freshly built RetinaNet."""
    root = tmp_path_factory.mktemp('flags')
    made = subprocess.run([sys.executable, 'tools/misc/make_demo_coco.py', '--out',
                           str(root / 'shapes'), '--train', '4', '--val', '2', '--size', '64',
                           '--seed', '3'], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    cfg = _config(root / 'retinanet.py', DEMO, root / 'shapes')
    _config(root / 'faster_rcnn.py', FASTER_DEMO, root / 'shapes')
    from mmsfr.apis import build_model
    torch.save({'state_dict': build_model(cfg).state_dict()}, root / 'det.pth')
    return root


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('mmsfr_tool_test_flags', REPO / 'tools/test.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, 'tools/test.py', *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    assert 'mmengine - INFO' not in out.stdout + out.stderr  # stopped before the runner
    return lines[0]


# ------------------------------------------------------------------------- --out
def test_out_json_is_refused_with_how_to_get_coco_json(files, tmp_path):
    out = run(files / 'retinanet.py', files / 'det.pth', '--work-dir', tmp_path / 'w',
              '--out', tmp_path / 'res.json')
    line = one_error_line(out)
    assert f'--out {tmp_path}/res.json: mmdet dumps the predictions as a pickle' in line
    assert 'must end in .pkl or .pickle' in line
    assert ('--cfg-options test_evaluator.format_only=True '
            f'test_evaluator.outfile_prefix={tmp_path}/res (writes {tmp_path}/res.bbox.json)'
            in line)
    assert not (tmp_path / 'res.json').exists() and not (tmp_path / 'w').exists()


def test_out_json_for_a_classifier_has_no_coco_hint(tool, capsys, tmp_path):
    code = tool.main([str(CLASSIFIER), str(tmp_path / 'none.pth'), '--out', 'res.json',
                      '--work-dir', str(tmp_path / 'w')])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0] == ('error: --out res.json: the predictions are written as a pickle, so '
                      '--out must end in .pkl or .pickle')


def test_out_pkl_and_show_dir_write_predictions_and_images(files, tmp_path):
    work = tmp_path / 'work'
    out = run(files / 'retinanet.py', files / 'det.pth', '--work-dir', work, '--out',
              tmp_path / 'preds.pkl', '--show-dir', 'vis')
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'coco/bbox_mAP' in out.stdout + out.stderr
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 2 and all('pred_instances' in p for p in preds)
    assert sorted(p.name for p in work.glob('*/vis/*.png')) == ['00000.png', '00001.png']


# ------------------------------------------------------------ --show / --wait-time
def test_show_without_a_display_is_one_line(files, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ('DISPLAY', 'WAYLAND_DISPLAY')}
    line = one_error_line(run(files / 'retinanet.py', files / 'det.pth', '--work-dir',
                              tmp_path / 'w', '--show', env=env))
    assert '--show needs a display' in line and 'use --show-dir DIR' in line


def test_show_and_wait_time_set_the_visualization_hook(tool, files, tmp_path, monkeypatch):
    monkeypatch.setenv('DISPLAY', ':0')
    argv = [str(files / 'retinanet.py'), str(files / 'det.pth'), '--work-dir',
            str(tmp_path / 'w')]
    hook = tool.build_cfg(tool.parse_args(argv + ['--show', '--wait-time', '0.5'])
                          ).default_hooks.visualization
    assert (hook.type, hook.draw, hook.show, hook.wait_time) == (
        'DetVisualizationHook', True, True, 0.5)
    assert hook.get('test_out_dir') is None
    assert tool.parse_args(argv).wait_time == 2.0  # mmdet's default
    hook = tool.build_cfg(tool.parse_args(argv + ['--show-dir', 'vis'])
                          ).default_hooks.visualization
    assert (hook.draw, hook.get('show', False), hook.test_out_dir) == (True, False, 'vis')
    for bad in ('abc', '-1'):
        with pytest.raises(SystemExit) as exited:
            tool.parse_args(argv + ['--wait-time', bad])
        assert exited.value.code == 2


def test_show_dir_for_a_classifier_is_one_line(tool, capsys, tmp_path):
    code = tool.main([str(CLASSIFIER), str(tmp_path / 'none.pth'), '--show-dir', 'vis',
                      '--work-dir', str(tmp_path / 'w')])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        'error: --show-dir is supported for detectors only')


# --------------------------------------------------------------------------- --tta
def test_tta_without_tta_model_is_one_line(files, tmp_path):
    line = one_error_line(run(files / 'faster_rcnn.py', files / 'det.pth', '--work-dir',
                              tmp_path / 'w', '--tta'))
    assert f'--tta: {files}/faster_rcnn.py defines no tta_model and no tta_pipeline' in line
    assert 'configs/demo/retinanet_condensenetv2_demo.py' in line


def test_tta_wraps_the_model_and_the_pipeline(tool, files, tmp_path):
    args = tool.parse_args([str(files / 'retinanet.py'), str(files / 'det.pth'), '--tta',
                            '--work-dir', str(tmp_path / 'w')])
    cfg = tool.build_cfg(args)
    assert cfg.model.type == 'RetinaNet'  # checked, not yet applied
    tool.apply_tta(cfg)
    assert cfg.model.type == 'DetTTAModel' and cfg.model.module.type == 'RetinaNet'
    assert cfg.model.module.backbone.init_cfg is None
    steps = [t.type for t in cfg.test_dataloader.dataset.pipeline]
    assert steps == ['LoadImageOrSkip', 'TestTimeAug']


def test_tta_runs_on_the_demo_config(files, tmp_path):
    out = run(files / 'retinanet.py', files / 'det.pth', '--work-dir', tmp_path / 'w',
              '--tta', '--out', tmp_path / 'tta.pkl')
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "type='DetTTAModel'" in text and 'coco/bbox_mAP' in text
    assert 'do not match exactly' not in text  # the weights loaded into the wrapped model
    with open(tmp_path / 'tta.pkl', 'rb') as f:
        assert len(pickle.load(f)) == 2


# ------------------------------------------- --cfg-options, --launcher, --work-dir
def test_cfg_options_launcher_and_work_dir_reach_the_config(tool, files, tmp_path):
    args = tool.parse_args([str(files / 'retinanet.py'), str(files / 'det.pth'),
                            '--work-dir', str(tmp_path / 'w'), '--launcher', 'none',
                            '--cfg-options', 'model.test_cfg.score_thr=0.3',
                            'test_dataloader.batch_size=1'])
    cfg = tool.build_cfg(args)
    assert cfg.work_dir == str(tmp_path / 'w') and cfg.launcher == 'none'
    assert cfg.model.test_cfg.score_thr == 0.3 and cfg.test_dataloader.batch_size == 1
    assert cfg.load_from == str(files / 'det.pth')
    with pytest.raises(SystemExit):
        tool.parse_args([str(files / 'retinanet.py'), 'x.pth', '--launcher', 'nope'])
