import subprocess
import sys

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
