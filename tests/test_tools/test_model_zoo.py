import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def test_readme_model_zoo_tables_are_up_to_date():
    out = subprocess.run([sys.executable, 'tools/analysis_tools/model_zoo.py', '--check'],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]


def test_detector_rows_are_measured_not_typed():
    """Re-measure two detector rows (one per family) and find them in the README."""
    sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))
    try:
        import model_zoo
    finally:
        sys.path.pop(0)
    readme = (REPO / 'README.md').read_text()
    for name in ('retinanet_condensenetv2_a.py', 'faster_rcnn_sfr_shufflenetv2_x0_5.py'):
        row = model_zoo.detector_row(REPO / 'configs' / name)
        assert row in readme, row
    assert f'inputs sha256 {model_zoo.detector_fingerprint()}' in readme


def test_stale_detector_fingerprint_is_reported(tmp_path):
    text = (REPO / 'README.md').read_text()
    readme = tmp_path / 'README.md'
    readme.write_text(text.replace('<!-- detectors: inputs sha256 ',
                                   '<!-- detectors: inputs sha256 0'))
    out = subprocess.run([sys.executable, 'tools/analysis_tools/model_zoo.py', '--check',
                          '--readme', str(readme)], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 1 and 'detector table is out of date' in out.stderr


def test_readme_without_markers_is_refused(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('# no tables here\n')
    out = subprocess.run([sys.executable, 'tools/analysis_tools/model_zoo.py', '--check',
                          '--readme', str(readme)], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 1 and 'has no <!-- model-zoo:start -->' in out.stderr


# ------------------------------------------------------------------ mim metafiles
METAFILES = ['configs/pretrain/condensenetv2/metafile.yml',
             'configs/pretrain/condensenet/metafile.yml',
             'configs/pretrain/shufflenetv2/metafile.yml', 'configs/metafile.yml']


def _model_zoo():
    sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))
    try:
        import model_zoo
    finally:
        sys.path.pop(0)
    return model_zoo


def _metafile_models() -> dict[str, dict]:
    """``{name: entry}`` of every model in the metafiles, with its file under 'file'."""
    import yaml
    out = {}
    for rel in METAFILES:
        for model in yaml.safe_load((REPO / rel).read_text())['Models']:
            assert model['Name'] not in out, f'{model["Name"]} twice'
            out[model['Name']] = dict(model, file=rel)
    return out


@pytest.fixture(scope='module')
def metafile_check():
    """One ``--check --metafiles`` run (re-measures the 21 classifiers)."""
    return subprocess.run([sys.executable, 'tools/analysis_tools/model_zoo.py', '--check',
                           '--metafiles'], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_metafiles_are_up_to_date(metafile_check):
    assert metafile_check.returncode == 0, metafile_check.stderr[-2000:]
    assert 'metafiles are up to date' in metafile_check.stdout


def test_progress_goes_to_stderr(metafile_check):
    lines = [line for line in metafile_check.stderr.splitlines() if line.startswith('[')]
    assert lines[0] == '[1/21] configs/pretrain/condensenetv2/condensenetv2-a_deploy_in1k.py'
    assert lines[-1] == ('[21/21] '
                         'configs/pretrain/shufflenetv2/sfr-shufflenetv2plus-m_deploy_in1k.py')
    assert len(lines) == 21 and not any(line.startswith('[') for line in
                                        metafile_check.stdout.splitlines())


def test_model_index_lists_every_config_once():
    import yaml
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    assert index == {'Import': METAFILES}
    model_zoo = _model_zoo()
    models = _metafile_models()
    collections = {}
    for rel in METAFILES:
        for c in yaml.safe_load((REPO / rel).read_text())['Collections']:
            assert {'Name', 'Metadata', 'Paper', 'README'} <= set(c), c
            assert {'Training Data', 'Architecture'} <= set(c['Metadata'])
            assert {'Title', 'URL'} == set(c['Paper'])
            assert (REPO / c['README']).is_file(), c['README']
            collections[c['Name']] = rel
    expected = ([f'configs/pretrain/{row[0]}' for row in model_zoo.CONDENSENETS]
                + [f'configs/pretrain/{row[0]}' for row in model_zoo.SHUFFLENETS]
                + sorted(f'configs/{p.name}' for p in (REPO / 'configs').glob('*.py')))
    assert sorted(m['Config'] for m in models.values()) == sorted(expected)
    for name, model in models.items():
        assert (REPO / model['Config']).is_file(), model['Config']
        assert name == Path(model['Config']).stem
        assert collections[model['In Collection']] == model['file']  # defined in its file
        assert isinstance(model['Metadata']['FLOPs'], int) and model['Metadata']['FLOPs'] > 0
        assert isinstance(model['Metadata']['Parameters'], int)
        assert 'Weights' not in model  # nothing is hosted: no URL to make up
        assert model['Weights Recipe'], name
        if 'Results' in model:
            assert 'not measured by mmsfr' in model['Results Source']


def test_metafile_numbers_come_from_the_lists_and_the_counter():
    """The papers' numbers are the README lists' (and the configs' headers); FLOPs and
    params are what the counter measures now (one classifier, one detector)."""
    model_zoo = _model_zoo()
    models = _metafile_models()
    for cfg, size, flops, params, top1 in model_zoo.CONDENSENETS + model_zoo.SHUFFLENETS:
        model = models[Path(cfg).stem]
        assert model['Paper Complexity'] == {'FLOPs': round(flops * 10**6),
                                             'Parameters': round(params * 10**6)}
        assert model['Metadata']['Input Size'] == size
        if top1 is None:
            assert 'Results' not in model
        else:
            assert model['Results'][0]['Metrics'] == {'Top 1 Accuracy': top1}
    for path in (REPO / 'configs').glob('*.py'):
        found = model_zoo.PAPER_MAP.search(path.read_text())
        model = models[path.stem]
        assert (model['Results'][0]['Metrics']['box AP'] if 'Results' in model
                else None) == (float(found[1]) if found else None)
    progress = model_zoo.Progress(1)
    measured = model_zoo.measure_classifiers(model_zoo.CONDENSENETS[:1], progress)[0]
    entry = model_zoo.classifier_entry(measured)
    assert entry == {k: v for k, v in models['condensenetv2-a_deploy_in1k'].items()
                     if k != 'file'}
    detector = model_zoo.measure_detector(REPO / 'configs/faster_rcnn_sfr_shufflenetv2_x0_5.py')
    assert model_zoo.detector_entry(detector) == {
        k: v for k, v in models['faster_rcnn_sfr_shufflenetv2_x0_5'].items() if k != 'file'}


def test_weights_recipes_name_real_commands():
    model_zoo = _model_zoo()
    models = _metafile_models()
    converter = models['condensenetv2-a_deploy_in1k']
    assert converter['Weights Recipe'] == [
        'python tools/model_converters/official_to_mmsfr.py --model condensenetv2_a '
        'RELEASED_FILE checkpoints/condensenetv2_a_deploy_in1k.pth']
    assert converter['Converted From']['Code'] == 'https://github.com/jianghaojun/CondenseNetV2'
    trained = models['sfr-shufflenetv2-x0_5_deploy_in1k']['Weights Recipe']
    train_cfg = 'configs/pretrain/shufflenetv2/sfr-shufflenetv2-x0_5_8xb128_in1k.py'
    assert trained[0].startswith(f'python tools/train.py {train_cfg} ')
    assert trained[1].startswith(f'python tools/convert_to_deploy.py {train_cfg} ')
    # ... into the file the detection configs read
    assert trained[1].endswith(' checkpoints/sfr_shufflenetv2_x0_5_deploy_in1k.pth')
    assert "checkpoint='checkpoints/sfr_shufflenetv2_x0_5_deploy_in1k.pth'" in (
        REPO / 'configs/_base_/backbones/sfr_shufflenetv2_x0_5.py').read_text()
    for name, model in models.items():
        for command in model['Weights Recipe']:
            script = command.split()[1]
            assert (REPO / script).is_file(), command
            for word in command.split():
                if word.startswith('configs/'):
                    assert (REPO / word).is_file(), command
    detector = models['retinanet_condensenetv2_c']
    assert detector['Metadata']['Backbone Checkpoint'] == (
        'checkpoints/condensenetv2_c_deploy_in1k.pth')
    assert model_zoo.weights_recipe('condensenet/condensenet-a_deploy_in1k.py')[1] is None


def test_modelindex_loads_the_index(monkeypatch):
    modelindex = pytest.importorskip('modelindex')
    monkeypatch.chdir(REPO)
    index = modelindex.load('model-index.yml')
    errors = index.check(silent=True)
    assert len(index.models) == len(_metafile_models()) and len(index.collections) == 8
    # modelindex resolves README paths relative to the metafile; OpenMMLab's metafiles
    # (and these) give them relative to the repository, which the test above checks.
    assert all(re.search(r'Path to README file \S+ is not a valid file', e) for e in errors), \
        errors
    model = next(m for m in index.models if m.name == 'retinanet_condensenetv2_c')
    assert model.full_model.metadata.data['Training Data'] == 'COCO'  # from the collection
    assert model.results.data[0].data == {'Task': 'Object Detection', 'Dataset': 'COCO',
                                          'Metrics': {'box AP': 31.7}}


def test_stale_or_missing_metafiles_are_reported(tmp_path):
    import shutil
    for rel in ['model-index.yml'] + METAFILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    (tmp_path / 'model-index.yml').unlink()
    cdnv2 = tmp_path / METAFILES[0]
    cdnv2.write_text(cdnv2.read_text().replace('Top 1 Accuracy: 64.4', 'Top 1 Accuracy: 70.0'))
    detectors = tmp_path / 'configs/metafile.yml'
    detectors.write_text(detectors.read_text().replace('inputs sha256 ', 'inputs sha256 0'))
    out = subprocess.run([sys.executable, 'tools/analysis_tools/model_zoo.py', '--check',
                          '--metafiles', '--metafile-root', str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1
    assert f'{tmp_path}/model-index.yml is missing' in out.stderr
    assert f'{cdnv2} is out of date' in out.stderr
    assert f'{detectors} has detector entries made from other configs or model code' in out.stderr
    assert f'{tmp_path}/configs/pretrain/condensenet/metafile.yml' not in out.stderr
