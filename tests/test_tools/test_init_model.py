"""The one path from a config to a model with weights (mmsfr.apis.init_model), which
every tool takes, and the configs shipped inside the package (mmsfr/.mim/configs)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from mmsfr.apis import build_from_config, build_model, init_model, load_checkpoint
from mmsfr.checkpoint import CheckpointError
from mmsfr.utils.cli import UserError
from mmsfr.utils.tool_setup import ConfigNotFoundError, config_root, find_config, list_configs

from conftest import REPO

NAME = 'condensenetv2-a_deploy_in1k'
REL = 'pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py'
TRAIN = 'configs/pretrain/condensenetv2/condensenetv2-a_8xb128_in1k.py'


@pytest.mark.parametrize('config', [NAME, f'{NAME}.py', REL, f'configs/{REL}',
                                    str(REPO / 'configs' / REL), Path('configs') / REL])
def test_a_config_is_found_by_name_or_path(config):
    assert find_config(config).resolve() == (REPO / 'configs' / REL).resolve()


def test_every_official_model_config_resolves():
    from mmsfr.converters import OFFICIAL_MODELS
    for entry in OFFICIAL_MODELS.values():
        for config in (entry.train_config, entry.deploy_config):
            assert find_config(config).is_file(), config


def test_names_are_the_model_configs():
    names = list_configs()
    assert NAME in names and 'retinanet_condensenetv2_a' in names
    assert len(names) == len(set(names))  # a name names one config
    assert 'condensenetv2-a' not in names and 'default_runtime' not in names  # no _base_
    assert list_configs('retinanet_*') == sorted(n for n in names if n.startswith('retinanet_'))


def test_a_bad_name_is_one_error_with_the_choices():
    with pytest.raises(ConfigNotFoundError) as err:
        init_model('condensenetv2-a_deploy')
    msg = str(err.value)
    assert "config 'condensenetv2-a_deploy' not found" in msg
    assert f"did you mean '{NAME}'" in msg and 'valid names: ' in msg
    assert all(name in msg for name in list_configs())
    assert isinstance(err.value, UserError) and isinstance(err.value, FileNotFoundError)


def test_init_model_builds_in_eval_mode_on_the_device():
    model = init_model(NAME, device='cpu')
    assert type(model).__name__ == 'ImageClassifier' and not model.training
    assert model.backbone.deploy and model.cfg.default_scope == 'mmpretrain'
    assert next(model.parameters()).device == torch.device('cpu')
    detector = init_model('retinanet_condensenetv2_a')
    assert type(detector).__name__ == 'RetinaNet' and detector.cfg.default_scope == 'mmdet'


def test_a_config_object_and_options():
    from mmengine.config import Config
    cfg = Config.fromfile(find_config(NAME))
    model = init_model(cfg, cfg_options={'model.head.num_classes': 10})
    assert model.head.num_classes == 10
    assert cfg.model.head.num_classes == 1000  # the given Config is not modified
    assert 'init_cfg' not in model.cfg.model.backbone
    with pytest.raises(TypeError, match='must be a path, a config name or an mmengine Config'):
        init_model(42)


def test_build_model_is_the_untouched_model_and_the_old_name_warns():
    model = build_model('retinanet_condensenetv2_a',
                        cfg_options={'model.backbone.with_cp': True})
    assert model.training and model.backbone.with_cp
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        old = build_from_config(f'configs/{REL}')
    assert [w.category for w in seen if 'build_from_config' in str(w.message)] == [
        DeprecationWarning]
    assert type(old) is type(build_model(NAME))


def test_checkpoint_is_read_weights_only_and_loaded_strictly(tmp_path):
    reference = build_model(NAME)
    with torch.no_grad():
        reference.head.fc.bias.normal_()
    ddp = {f'module.{k}': v for k, v in reference.state_dict().items()}
    torch.save({'state_dict': ddp}, tmp_path / 'ddp.pth')
    model = init_model(NAME, tmp_path / 'ddp.pth')
    assert torch.equal(model.head.fc.bias, reference.head.fc.bias)

    # Weights that do not fit: one error naming the file, the config and the keys.
    partial = {k: v for k, v in reference.state_dict().items() if k != 'head.fc.bias'}
    torch.save({'state_dict': partial}, tmp_path / 'partial.pth')
    with pytest.raises(CheckpointError, match=rf'partial\.pth does not fit the model of '
                       rf'{NAME}: 1 missing keys \(head\.fc\.bias\)'):
        init_model(NAME, tmp_path / 'partial.pth')
    # Another arch (or form) is named by the model itself.
    torch.save({'state_dict': build_model('condensenetv2-b_deploy_in1k').state_dict()},
               tmp_path / 'b.pth')
    with pytest.raises(ValueError, match="holds arch 'b'"):
        init_model(NAME, tmp_path / 'b.pth')
    # The form (train-time masks vs deploy) is named by the model itself.
    torch.save({'state_dict': build_model(TRAIN).state_dict()}, tmp_path / 'train.pth')
    with pytest.raises(ValueError, match='train-time'):
        init_model(NAME, tmp_path / 'train.pth')
    (tmp_path / 'notes.pth').write_text('notes')
    with pytest.raises(CheckpointError, match='is a text file'):
        load_checkpoint(model, tmp_path / 'notes.pth')


def test_a_checkpoint_url_is_downloaded_once_and_read_weights_only(tmp_path):
    torch.save({'state_dict': build_model(NAME).state_dict()}, tmp_path / 'w.pth')
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    try:
        init_model(NAME, (tmp_path / 'w.pth').as_uri())
        cached = tmp_path / 'hub' / 'checkpoints' / 'w.pth'
        assert cached.is_file()
        (tmp_path / 'w.pth').unlink()  # the cached copy is used
        init_model(NAME, (tmp_path / 'w.pth').as_uri())
        with pytest.raises(CheckpointError, match='cannot download checkpoint'):
            init_model(NAME, (tmp_path / 'gone.pth').as_uri())
    finally:
        torch.hub.set_dir(previous)


def test_configs_of_other_packages_and_typos():
    assert find_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py').is_file()
    with pytest.raises(ConfigNotFoundError, match='not found in the configs mmdet ships'):
        find_config('mmdet::retinanet/nope.py')
    with pytest.raises(ConfigNotFoundError, match='did you mean configs/retinanet_condensenetv2_c'):
        find_config('configs/retinanet_condensenetv2_cc.py')


def test_init_model_outside_the_checkout(tmp_path):
    """From another directory: names, package-relative and registry-style paths."""
    code = ('from mmsfr.apis import init_model\n'
            f"for config in ('{NAME}', '{REL}', 'configs/{REL}'):\n"
            '    print(type(init_model(config)).__name__)\n')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ['ImageClassifier'] * 3


# ------------------------------------------------------------------ shipped with the package
def _project_copy(root: Path) -> Path:
    """The files setup.py needs, without the C++ sources (a pure-PyTorch build)."""
    for name in ('setup.py', 'README.md', 'MANIFEST.in', 'requirements', 'configs',
                 'model-index.yml', 'mmsfr/version.py'):
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    (root / 'mmsfr' / '__init__.py').write_text('')
    return root


def _setup(root: Path, *argv: str) -> None:
    env = dict(os.environ, MMSFR_WITH_OPS='0')
    out = subprocess.run([sys.executable, 'setup.py', '-q', *argv], cwd=root,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_wheels_carry_the_configs_and_editable_installs_link_them(tmp_path):
    root = _project_copy(tmp_path / 'src')
    _setup(root, 'bdist_wheel', '--dist-dir', str(tmp_path / 'dist'))
    wheel, = (tmp_path / 'dist').glob('*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n[len('mmsfr/.mim/configs/'):] for n in names
               if n.startswith('mmsfr/.mim/configs/')}
    in_repo = {p.relative_to(REPO / 'configs').as_posix()
               for p in (REPO / 'configs').rglob('*') if p.suffix in ('.py', '.yml')}
    assert shipped == in_repo and 'mmsfr/.mim/model-index.yml' in names
    assert not (root / 'mmsfr' / '.mim' / 'configs').is_symlink()  # a copy

    _setup(root, 'editable_wheel', '--dist-dir', str(tmp_path / 'editable'))
    link = root / 'mmsfr' / '.mim' / 'configs'
    assert link.is_symlink() and os.readlink(link) == os.path.join('..', '..', 'configs')
    assert (link / REL).is_file()


def test_the_shipped_configs_are_used_when_installed():
    """An installed package (no checkout beside it) resolves from mmsfr/.mim/configs."""
    root = config_root()
    assert (root / REL).is_file()
    shipped = Path(__import__('mmsfr').__file__).parent / '.mim' / 'configs'
    if shipped.is_symlink():  # an editable install: the link is the one used
        assert root == shipped
