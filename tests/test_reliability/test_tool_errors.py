"""The tools: one line for every user error, never an input overwritten, clean saves.

Each expected user error (an unreadable checkpoint, a config path typo, a corrupt
annotation file, a --resume checkpoint of another model, missing test images, a too
small --shape, an output that cannot be written) is one line ``error: ...`` naming the
file or value and what to do, exit status 1, and ``--debug`` / ``MMSFR_DEBUG=1`` give
the traceback. No tool writes over one of its inputs. Written files get the mode
``torch.save`` would give them, and a save interrupted by SIGTERM leaves no temporary
file behind.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (DIGITS_DEPLOY_CFG, DIGITS_TRAIN_CFG, REPO, digits_config,
                      without_warnings, write_digits_folder, write_image)

TRAIN_CFG, DEPLOY_CFG = DIGITS_TRAIN_CFG, DIGITS_DEPLOY_CFG
CDNV2_A_DEPLOY = REPO / 'configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py'
DEMO = REPO / 'configs/demo/retinanet_condensenetv2_demo.py'

TOOLS = dict(
    convert='tools/convert_to_deploy.py',
    official='tools/model_converters/official_to_mmsfr.py',
    plot='tools/analysis_tools/plot_connectivity.py',
    onnx='tools/deployment/export_onnx.py',
    test='tools/test.py',
    train='tools/train.py',
    flops='tools/analysis_tools/get_flops.py',
)


@pytest.fixture(scope='module')
def tools():
    loaded = {}
    for name, rel in TOOLS.items():
        spec = importlib.util.spec_from_file_location(f'mmsfr_tool_{name}', REPO / rel)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded[name] = module
    return loaded


def call(tools, capsys, name, *argv):
    """Run a tool's main in-process: (exit code, stdout, the stderr lines)."""
    code = tools[name].main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, without_warnings(captured.err)


def one_error(code, lines) -> str:
    assert code == 1, lines
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    return lines[0]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A tiny 10-class folder dataset, its config, checkpoints and broken files."""
    root = tmp_path_factory.mktemp('files')
    write_digits_folder(root / 'digits')
    from mmsfr.apis import build_model
    from mmsfr.models import condense_model
    cfg = digits_config(root / 'digits_cfg.py', root / 'digits')
    train = build_model(cfg)
    condense_model(train, 1.0)
    torch.save({'state_dict': train.state_dict()}, root / 'train.pth')
    torch.save({'state_dict': build_model(DEPLOY_CFG).state_dict()}, root / 'deploy.pth')
    (root / 'empty.pth').write_bytes(b'')
    (root / 'truncated.pth').write_bytes((root / 'train.pth').read_bytes()[:5000])
    (root / 'notes.pth').write_text('these are my notes, not weights\n')
    (root / 'a_file').write_text('a file, not a directory')
    return root


# ------------------------------------------------------------------ unreadable inputs
@pytest.mark.parametrize('tool,kind,expected', [
    ('convert', 'empty', 'is empty (0 bytes)'),
    ('convert', 'truncated', 'is a truncated or damaged zip archive'),
    ('convert', 'notes', "is a text file (32 bytes, starting 'these are my notes, not"),
    ('official', 'truncated', 'is a truncated or damaged zip archive'),
    ('plot', 'notes', 'is a text file'),
    ('onnx', 'empty', 'is empty (0 bytes)'),
    ('test', 'truncated', 'is a truncated or damaged zip archive'),
])
def test_unreadable_checkpoint_is_one_line(tools, capsys, files, tmp_path, tool, kind,
                                           expected):
    ckpt = files / f'{kind}.pth'
    argv = dict(
        convert=[files / 'digits_cfg.py', ckpt, tmp_path / 'out.pth'],
        official=['--model', 'condensenetv2_a', ckpt, tmp_path / 'out.pth'],
        plot=[ckpt, '--out', tmp_path / 'plots'],
        onnx=[DEPLOY_CFG, ckpt, tmp_path / 'out.onnx', '--shape', '16'],
        test=[files / 'digits_cfg.py', ckpt, '--work-dir', tmp_path / 'work'],
    )[tool]
    line = one_error(*call(tools, capsys, tool, *argv)[::2])
    assert f'checkpoint {ckpt}' in line and expected in line
    assert not list(tmp_path.iterdir())


def test_unreadable_checkpoint_subprocess_has_no_traceback(files, tmp_path):
    out = subprocess.run([sys.executable, TOOLS['test'], files / 'digits_cfg.py',
                          files / 'notes.pth', '--work-dir', tmp_path / 'work'],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and 'Traceback' not in out.stderr
    lines = without_warnings(out.stderr)
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'is a text file' in lines[0]
    assert 'mmengine - INFO' not in out.stdout + out.stderr  # stopped before the runner


def test_debug_flag_and_environment_give_the_traceback(tools, files, tmp_path, monkeypatch):
    from mmsfr.checkpoint import CheckpointError
    argv = [str(files / 'digits_cfg.py'), str(files / 'notes.pth'), str(tmp_path / 'o.pth')]
    with pytest.raises(Exception, match='is a text file') as raised:
        tools['convert'].main(argv + ['--debug'])
    assert isinstance(raised.value.__cause__ or raised.value, CheckpointError)
    monkeypatch.setenv('MMSFR_DEBUG', '1')
    with pytest.raises(Exception, match='is a text file') as raised:
        tools['convert'].main(argv)
    assert isinstance(raised.value.__cause__ or raised.value, CheckpointError)


# ------------------------------------------------------------------ configs and data
def test_config_path_typo_names_the_closest_config(tools, capsys, files, tmp_path):
    typo = REPO / 'configs/pretrain/condensenetv2/condensenetv2-cifar-digit_1xb64_digits.py'
    line = one_error(*call(tools, capsys, 'convert', typo, files / 'train.pth',
                           tmp_path / 'o.pth')[::2])
    assert f'config {typo} not found; did you mean {TRAIN_CFG}?' in line
    line = one_error(*call(tools, capsys, 'train', 'configs/retinanet_condensenetv2_cc.py',
                           '--work-dir', tmp_path / 'w')[::2])
    assert 'did you mean configs/retinanet_condensenetv2_c.py?' in line


@pytest.fixture
def coco(tmp_path):
    """A 2+2 image COCO dataset laid out as the demo config expects."""
    rng = np.random.default_rng(0)
    images = []
    for split in ('train', 'val'):
        for i in range(2):
            write_image(tmp_path / 'coco' / split / f'{i}.png', rng)
    for i in range(2):
        images.append(dict(id=i + 1, file_name=f'{i}.png', width=16, height=16))
    ann = dict(images=images, categories=[dict(id=1, name='circle'), dict(id=2, name='square'),
                                          dict(id=3, name='triangle')],
               annotations=[dict(id=1, image_id=1, category_id=1, bbox=[2, 2, 8, 8],
                                 area=64, iscrowd=0)])
    (tmp_path / 'coco' / 'annotations').mkdir()
    for split in ('train', 'val'):
        (tmp_path / 'coco' / 'annotations' / f'instances_{split}.json').write_text(
            json.dumps(ann))
    return tmp_path / 'coco'


def coco_config(path: Path, root: Path) -> Path:
    path.write_text(textwrap.dedent(f"""\
        _base_ = ['{DEMO.as_posix()}']
        train_dataloader = dict(num_workers=0, persistent_workers=False,
                                dataset=dict(data_root='{root.as_posix()}/'))
        val_dataloader = dict(num_workers=0, persistent_workers=False,
                              dataset=dict(data_root='{root.as_posix()}/'))
        test_dataloader = val_dataloader
        val_evaluator = dict(ann_file='{root.as_posix()}/annotations/instances_val.json')
        test_evaluator = val_evaluator
        """))
    return path


def test_corrupt_annotation_json_is_named(tools, capsys, coco, tmp_path):
    ann = coco / 'annotations' / 'instances_train.json'
    ann.write_text('{"images": [{"id": 1, "file_name": "0.png"')  # truncated
    cfg = coco_config(tmp_path / 'cfg.py', coco)
    line = one_error(*call(tools, capsys, 'train', cfg, '--work-dir', tmp_path / 'w')[::2])
    assert f'train dataset: annotation file {ann} is not valid JSON' in line
    assert 'restore or regenerate it' in line


def test_test_tool_names_missing_images(tools, capsys, coco, files, tmp_path):
    cfg = coco_config(tmp_path / 'cfg.py', coco)
    (coco / 'val' / '1.png').unlink()
    ckpt = tmp_path / 'det.pth'
    torch.save({'state_dict': {}}, ckpt)
    code, out, err = call(tools, capsys, 'test', cfg, ckpt, '--work-dir', tmp_path / 'w')
    line = one_error(code, err)
    assert f'1 of 2 images are missing, e.g. {coco}/val/1.png' in line
    assert 'restore them or fix data_root / data_prefix' in line and not out.strip()


def test_test_tool_names_empty_class_folders(tools, capsys, files, tmp_path):
    root = tmp_path / 'digits'
    for label in range(10):
        (root / 'val' / str(label)).mkdir(parents=True)
    cfg = digits_config(tmp_path / 'cfg.py', root)
    line = one_error(*call(tools, capsys, 'test', cfg, files / 'train.pth', '--work-dir',
                           tmp_path / 'w')[::2])
    assert f'the 10 class folders in {root}/val hold no images' in line


def test_resume_with_another_models_checkpoint_is_one_line(tools, capsys, files, tmp_path):
    from mmsfr.apis import build_model
    other = digits_config(tmp_path / 'other.py', files / 'digits',
                          'model = dict(head=dict(num_classes=5))\n')
    ckpt = tmp_path / 'other_epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': build_model(other).state_dict()},
               ckpt)
    code, out, err = call(tools, capsys, 'train', files / 'digits_cfg.py', '--work-dir',
                          tmp_path / 'w', '--resume', ckpt)
    line = one_error(code, err)
    assert f'--resume checkpoint {ckpt} does not fit the model of {files}/digits_cfg.py' in line
    assert 'head.fc.weight (5, 240) vs (10, 240)' in line
    assert 'resume with the config it was trained with' in line
    assert not out.strip()  # nothing started


# ------------------------------------------------------------------ --shape
def test_too_small_shape_names_the_smallest_that_runs(tools, capsys, tmp_path):
    from mmsfr.apis import build_model
    ckpt = tmp_path / 'cdnv2_a.pth'
    torch.save({'state_dict': build_model(CDNV2_A_DEPLOY).state_dict()}, ckpt)
    out = tmp_path / 'a.onnx'
    code, _, err = call(tools, capsys, 'onnx', CDNV2_A_DEPLOY, ckpt, out, '--shape', '16')
    line = one_error(code, err)
    assert line.startswith('error: --shape 16 16: ImageClassifier (CondenseNetV2 backbone) '
                           'cannot run on a 16x16 input (')
    assert 'use --shape 32 or larger' in line and not out.exists()
    code, _, err = call(tools, capsys, 'flops', CDNV2_A_DEPLOY, '--shape', '16',
                        '--no-mmengine')
    line = one_error(code, err)
    assert '--shape 16 16: ImageClassifier cannot run on a 16x16 input' in line
    assert 'use --shape 32 or larger' in line


# ------------------------------------------------------------------ outputs
def _read_only_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / 'read_only'
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    # root writes anywhere permissions allow; sysfs refuses new files even to root
    probe = Path('/sys')
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK) or _refuses(probe):
        return probe
    pytest.skip('no read-only directory available to root here')


def _refuses(folder: Path) -> bool:
    try:
        (folder / '.mmsfr-probe').touch()
    except OSError:
        return True
    (folder / '.mmsfr-probe').unlink()
    return False


@pytest.mark.parametrize('tool', ['convert', 'official', 'onnx'])
def test_unwritable_output_is_one_line(tools, capsys, files, tmp_path, tool):
    argv = dict(convert=[files / 'digits_cfg.py', files / 'train.pth'],
                official=['--model', 'condensenetv2_a', files / 'train.pth'],
                onnx=[DEPLOY_CFG, files / 'deploy.pth'])[tool]
    read_only = _read_only_dir(tmp_path) / 'out.pth'
    line = one_error(*call(tools, capsys, tool, *argv, read_only)[::2])
    assert f'cannot write {read_only}: the directory {read_only.parent} is not writable' in line
    under_file = files / 'a_file' / 'out.pth'
    line = one_error(*call(tools, capsys, tool, *argv, under_file)[::2])
    assert f'cannot write {under_file}: {files}/a_file is a file, not a directory' in line


def test_no_tool_writes_over_an_input(tools, capsys, files, tmp_path):
    config = tmp_path / 'cfg.py'
    config.write_bytes((files / 'digits_cfg.py').read_bytes())
    ckpt = tmp_path / 'train.pth'
    ckpt.write_bytes((files / 'train.pth').read_bytes())
    link = tmp_path / 'link.pth'
    link.symlink_to(ckpt)
    before = {p: p.read_bytes() for p in (config, ckpt)}
    dotted = tmp_path / 'sub' / '..' / 'cfg.py'
    (tmp_path / 'sub').mkdir()
    cases = [
        ('convert', [config, ckpt, config]),  # the config, as the issue reports
        ('convert', [config, ckpt, dotted]),  # ... spelled differently
        ('convert', [config, ckpt, link]),  # a link to the checkpoint
        ('official', ['--model', 'condensenetv2_a', ckpt, f'{tmp_path}/./train.pth']),
        ('onnx', [DEPLOY_CFG, files / 'deploy.pth', DEPLOY_CFG]),
    ]
    for tool, argv in cases:
        line = one_error(*call(tools, capsys, tool, *argv)[::2])
        assert 'refusing to overwrite the input file' in line, (tool, argv)
    assert {p: p.read_bytes() for p in (config, ckpt)} == before
    assert link.is_symlink()


def test_written_files_respect_the_umask_and_existing_modes(tools, capsys, files, tmp_path):
    import torchvision
    released = tmp_path / 'tv.pth'
    torch.save(torchvision.models.shufflenet_v2_x0_5().state_dict(), released)
    old = os.umask(0o022)
    try:
        code, _, err = call(tools, capsys, 'convert', files / 'digits_cfg.py',
                            files / 'train.pth', tmp_path / 'deploy.pth')
        assert code == 0, err
        code, _, err = call(tools, capsys, 'official', '--model',
                            'torchvision_shufflenetv2_x0_5', released, tmp_path / 'mmsfr.pth')
        assert code == 0, err
        assert (tmp_path / 'deploy.pth').stat().st_mode & 0o777 == 0o644
        assert (tmp_path / 'mmsfr.pth').stat().st_mode & 0o777 == 0o644
        existing = tmp_path / 'kept_mode.pth'
        existing.write_bytes(b'old')
        existing.chmod(0o640)
        code, _, err = call(tools, capsys, 'convert', files / 'digits_cfg.py',
                            files / 'train.pth', existing)
        assert code == 0 and existing.stat().st_mode & 0o777 == 0o640
        os.umask(0o077)
        code, _, err = call(tools, capsys, 'convert', files / 'digits_cfg.py',
                            files / 'train.pth', tmp_path / 'private.pth')
        assert code == 0 and (tmp_path / 'private.pth').stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert not list(tmp_path.glob('.*.tmp'))


def test_onnx_export_respects_the_umask(tmp_path):
    from mmsfr.deployment import ExportModule, export_verified
    module = ExportModule(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())).eval()
    old = os.umask(0o022)
    try:
        result = export_verified(module, tmp_path / 'tiny.onnx', (16, 16))
    finally:
        os.umask(old)
    assert result.path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ['tiny.onnx']


SLOW_SAVE = """
import sys, time
import mmsfr
from mmsfr.apis import atomic_save

class Slow:
    def __reduce__(self):
        print('saving', flush=True)
        time.sleep(60)
        return (int, (0, ))

atomic_save({'weights': bytes(1 << 20), 'slow': Slow()}, sys.argv[1])
"""


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_save_leaves_no_temporary_file(tmp_path, signum):
    out = tmp_path / 'out.pth'
    proc = subprocess.Popen([sys.executable, '-c', SLOW_SAVE, str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'saving'
        assert list(tmp_path.glob('*.tmp')), 'the save writes to a temporary file'
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    if signum == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM  # still terminated by the signal
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
