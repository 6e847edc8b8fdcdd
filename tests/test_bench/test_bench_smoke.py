"""The benchmark scripts run (smoke mode): tables, targets and exactness checks print.

Speed is not asserted here (a shared CI machine measures noise); the scripts' full runs
produce the README's figures.
"""
import re
import subprocess
import sys

import pytest

from conftest import REPO

#: What a run with ``--tuned-malloc`` prints about the allocator.
TUNED_ALLOCATOR = 'allocator: glibc.malloc.mmap_threshold=4294967296'

SCRIPTS = {
    'dense_layer_convs.py': ['Dense-layer convs per block (median ms', 'oneDNN ms',
                             'onnxruntime ms', 'mmsfr of GEMM', '1x1 inputs per group',
                             "mmsfr kernel <= 1.0x the faster library's convs alone",
                             '(<= 1e-4: True)'],
    'dispatch_overhead.py': ['Per call, empty batch (median us)', 'lgc_conv_', 'sfr_',
                             'se_', 'linear_', 'Whole forward (median)',
                             'forward with the bindings <= 1.0x through the dispatcher',
                             'logits of the two ways equal: True'],
    'latency_224.py': ['Latency (median)', 'x MobileNetV2', 'GFLOP/s', 'of GEMM',
                       'CondenseNetV2-A reference form', 'SFR-ShuffleNetV2 1.5x deploy',
                       'Exactness'],
    'detection_backbone.py': ['Backbone latency (median)', 'mmdet ResNet-50',
                              'speed-up over the reference form >= 3x',
                              'SFR scatter state'],
    'memory.py': ['Peak resident memory', 'with_cp=True', 'RetinaNet R-50 (mmdet)',
                  'peak RSS with_cp on / off <= 0.6'],
    'condensation_overhead.py': ['Training step (median)', 'masked step <= 1.3x plain'],
    'linear_head.py': ['Linear layers (median)', 'nn.Linear GB/s', 'FastLinear GB/s',
                       'CondenseNetV2-C fc', 'FastLinear <= 1.0x nn.Linear',
                       'FastLinear vs nn.Linear outputs: max relative difference'],
    'onnx_detector.py': ['Whole RetinaNet (backbone + FPN + head, no post-processing)',
                         'RetinaNet-CondenseNetV2-C, onnxruntime',
                         'RetinaNet-MobileNetV2, PyTorch eager',
                         'exported graphs vs PyTorch: max relative difference'],
    'onnx_latency.py': ['Batch 1, 1 thread(s): latency (median)', 'onnxruntime ms', 'eager ms',
                        'onnxruntime x MobileNetV2 onnxruntime', 'of GEMM',
                        'torchvision MobileNetV3-Large', 'CondenseNetV2-A deploy',
                        'SFR-ShuffleNetV2 1.5x deploy', 'Exactness: onnxruntime vs PyTorch',
                        'ONNX nodes', 'CondenseNetV2-A deploy, SFR as ScatterND rounds',
                        'CondenseNetV2-A deploy, 3x3 convs as grouped Conv',
                        'CondenseNetV2-A deploy, depthwise passes up to 8 outputs',
                        TUNED_ALLOCATOR],
}
#: Scripts that report figures without targets to check.
NO_TARGETS = {'onnx_detector.py'}
#: Options a script's smoke run also checks (each run costs minutes: one run covers
#: them); SCRIPTS lists what they print.
OPTIONS = {'onnx_latency.py': ['--tuned-malloc']}


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_benchmark_runs_in_quick_mode(script):
    out = run(f'bench/{script}', '--quick', *OPTIONS.get(script, []))
    assert out.returncode == 0, out.stderr[-3000:]
    for text in SCRIPTS[script]:
        assert text in out.stdout, (text, out.stdout)
    if script not in NO_TARGETS:
        assert '| met' in out.stdout or '| NOT met' in out.stdout


@pytest.mark.parametrize('script', ['detection_backbone.py', 'latency_224.py'])
def test_tuned_malloc_reruns_with_the_setting_and_profiles(script):
    out = run(f'bench/{script}', '--quick', '--tuned-malloc', '--profile')
    assert out.returncode == 0, out.stderr[-3000:]
    assert TUNED_ALLOCATOR in out.stdout
    assert 'Self CPU time total' in out.stdout  # the op profile
    if script == 'latency_224.py':  # and the number of calls the README quotes
        calls = re.search(r'forward \((\d+) top-level aten calls\)', out.stdout)
        assert calls and int(calls.group(1)) > 0, out.stdout


def test_benchmarks_reject_bad_arguments():
    out = run('bench/latency_224.py', '--repeats', '0')
    assert out.returncode == 2 and '--repeats must be >= 1, got 0' in out.stderr
    out = run('bench/latency_224.py', '--size', '16')
    assert out.returncode == 2 and '--size must be >= 32' in out.stderr
    out = run('bench/latency_224.py', '--batch', '0')
    assert out.returncode == 2 and '--batch must be >= 1, got 0' in out.stderr
    out = run('bench/detection_backbone.py', '--shape', '8', '8')
    assert out.returncode == 2 and '--shape must be >= 32' in out.stderr


def test_reference_form_is_the_same_function():
    sys.path.insert(0, str(REPO / 'bench'))
    try:
        import torch
        from _common import condensed, deploy_copy, rel_diff
        from reference_form import reference_backbone, scatter_bytes

        from mmsfr.models import CondenseNetV2
        ours = deploy_copy(condensed(CondenseNetV2('a')))
        ref = reference_backbone(ours)
        x = torch.rand(2, 3, 64, 96)
        with torch.no_grad():
            for a, b in zip(ours(x), ref(x)):
                assert rel_diff(a, b) < 1e-5
        # dense float matrices vs int64 indices: i * i * 4 bytes vs i * 8 per layer
        assert scatter_bytes(ref) > 50 * scatter_bytes(ours)
        with pytest.raises(ValueError, match='deploy-form'):
            reference_backbone(CondenseNetV2('a'))
    finally:
        sys.path.remove(str(REPO / 'bench'))
