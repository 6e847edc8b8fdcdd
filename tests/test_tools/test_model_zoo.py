import subprocess
import sys

from conftest import REPO


def test_readme_model_zoo_tables_are_up_to_date():
    out = subprocess.run([sys.executable, 'tools/analysis_tools/model_zoo.py', '--check'],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]


def test_readme_without_markers_is_refused(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('# no tables here\n')
    out = subprocess.run([sys.executable, 'tools/analysis_tools/model_zoo.py', '--check',
                          '--readme', str(readme)], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 1 and 'has no <!-- model-zoo:start -->' in out.stderr
