import subprocess
import sys

from conftest import REPO


def test_benchmark_times_a_detector_config():
    out = subprocess.run(
        [sys.executable, 'tools/analysis_tools/benchmark.py',
         'configs/demo/retinanet_condensenetv2_demo.py', '--shape', '64', '96',
         '--warmup', '1', '--repeats', '2', '--threads', '1'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'RetinaNet of configs/demo/retinanet_condensenetv2_demo.py, input 1x3x64x96' in out.stdout
    assert '1 warm-up + 2 timed' in out.stdout
    images_per_s = float(out.stdout.split('images/s')[1].split()[0])
    assert images_per_s > 0


def test_benchmark_rejects_bad_shape():
    out = subprocess.run([sys.executable, 'tools/analysis_tools/benchmark.py',
                          'configs/demo/retinanet_condensenetv2_demo.py', '--shape', '1', '2', '3'],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and '--shape takes H or H W' in out.stderr
