"""The C++ path of the deploy CondenseNets on unusual inputs: small and empty sizes,
NaN and infinities, and the per-thread switch of the kernels.

Sizes run in a subprocess (this file run as a script), so that a kernel killed by a
signal (SIGFPE) fails the test instead of ending pytest.
"""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import mmsfr
from mmsfr.models import CondenseNet, CondenseNetV2, condense_model
from mmsfr.models.backbones.condensenet import DenseLayer
from mmsfr.models.layers.dense_plan import dense_plan, se_arguments
from mmsfr import ops
from mmsfr.models.layers import SqueezeExcitation
from mmsfr.testing import randomise_bn, rel_diff

if not ops.native_available() and os.environ.get('MMSFR_REQUIRE_NATIVE'):
    raise ImportError(f'mmsfr._ext is required (MMSFR_REQUIRE_NATIVE) but {ops.STATUS}')
pytestmark = pytest.mark.skipif(not ops.native_available(), reason=ops.STATUS)

#: (class, arch) of the models whose inputs are swept; every block is an output.
MODELS = [(CondenseNetV2, 'a'), (CondenseNet, 'a'), (CondenseNetV2, 'cifar-110')]


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    """This file as a script in a fresh interpreter importing the same mmsfr."""
    path = os.pathsep.join([str(Path(mmsfr.__file__).parents[1]),
                            os.environ.get('PYTHONPATH', '')])
    return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, 'PYTHONPATH': path, **env})


def sampled_sizes(count: int = 24, seed: int = 0) -> list[tuple[int, int, int]]:
    """(batch, height, width): the edge cases, then a sample of 1..40 x 1..40, the
    batch cycling through 0..3."""
    edges = [(1, 1), (7, 7), (16, 16), (32, 1), (1, 32), (2, 3), (31, 33), (32, 32), (40, 40)]
    rng = random.Random(seed)
    sizes = edges + [(rng.randint(1, 40), rng.randint(1, 40)) for _ in range(count)]
    return [(i % 4, h, w) for i, (h, w) in enumerate(sizes)]


def deploy_model(cls: type, arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    blocks = len(cls.arch_settings[arch]['depths'])
    model = randomise_bn(cls(arch, out_indices=tuple(range(blocks)))).eval()
    condense_model(model, 1.0)
    model.switch_to_deploy()
    return model


def _outcome(fn) -> tuple[list[torch.Tensor] | None, str]:
    try:
        return [o.detach() for o in fn()], 'ok'
    except Exception as err:  # noqa: BLE001  (the outcome is the result)
        return None, f'{type(err).__name__}: {err}'


def _max_diff(outs: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    """The largest :func:`rel_diff` of two lists of outputs (inf if shapes differ)."""
    if [o.shape for o in outs] != [r.shape for r in refs]:
        return float('inf')
    return max((rel_diff(o, r) for o, r in zip(outs, refs) if r.numel()), default=0.0)


def sweep_sizes() -> None:
    """Print, per model and size, how the canonical ops (autograd), the PyTorch
    inference path and the C++ path end, and how far their outputs are apart."""
    for cls, arch in MODELS:
        model = deploy_model(cls, arch)
        for n, h, w in sampled_sizes():
            x = torch.rand(n, 3, h, w)
            canonical = _outcome(lambda: model(x))
            with torch.no_grad(), ops.native_kernels(False):
                plain = _outcome(lambda: model(x))
            with torch.no_grad(), ops.native_kernels(True):
                fused = _outcome(lambda: model(x))
            diff = 0.0
            if fused[0] is not None and plain[0] is not None and canonical[0] is not None:
                diff = max(_max_diff(fused[0], plain[0]), _max_diff(plain[0], canonical[0]))
            print(json.dumps(dict(model=f'{cls.__name__}-{arch}', size=[n, h, w],
                                  canonical=canonical[1], plain=plain[1], fused=fused[1],
                                  diff=diff)), flush=True)


def empty_kernel_calls() -> None:
    """Call every kernel on empty buffers (batch 0, height 0, width 0) and print
    whether each returned, leaving the buffer as it was."""
    torch.manual_seed(0)
    layer = randomise_bn(DenseLayer(16, 8, 4, 4, 4, act_cfg=dict(type='HSwish'),
                                    with_se=True, deploy=True)).eval()
    ext = ops
    for shape in [(0, 24, 5, 5), (1, 24, 0, 5), (2, 24, 5, 0), (1, 24, 0, 0)]:
        buf = torch.rand(shape)
        keep = buf.clone()
        args = dense_plan(layer, buf)
        ext.lgc_conv_(buf, 16, *args.lgc)
        ext.se_(buf, 16, 8, *se_arguments(layer.se))
        ext.sfr_(buf, 16, 8, *args.sfr)
        ext.avg_pool2x2_(torch.empty(shape[0], 24, shape[2] // 2, shape[3] // 2), buf)
        print(json.dumps(dict(shape=list(shape), unchanged=torch.equal(buf, keep))))
    one = torch.rand(1, 24, 1, 1)  # one pixel: pools to nothing
    ext.avg_pool2x2_(torch.empty(1, 24, 0, 0), one)
    print(json.dumps(dict(shape=[1, 24, 1, 1], unchanged=True)))


@pytest.fixture(scope='module')
def script_rows() -> list[dict]:
    """The rows :func:`sweep_sizes` and :func:`empty_kernel_calls` print, run in a
    subprocess; a kernel killed by a signal fails here."""
    result = run_script('sizes', 'empty', OMP_NUM_THREADS='1')
    assert result.returncode == 0, (f'killed by signal {-result.returncode}'
                                    if result.returncode < 0 else result.stderr[-2000:])
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_size_the_pytorch_path_accepts_runs_on_the_cpp_path_and_no_other(script_rows):
    rows = [row for row in script_rows if 'model' in row]
    assert len(rows) == len(MODELS) * len(sampled_sizes())
    for row in rows:
        case = f"{row['model']} at {row['size']}"
        accepted = row['canonical'] == 'ok'
        assert (row['plain'] == 'ok') == accepted and (row['fused'] == 'ok') == accepted, (
            f'{case}: {row}')
        if accepted:
            assert row['diff'] < 1e-5, f'{case}: {row}'
        else:  # a Python error that names the size that does not fit
            for path in ('plain', 'fused'):
                assert row[path].startswith('ValueError: '), f'{case}: {row}'
                assert re.search(r'\d+x\d+ feature map', row[path]), f'{case}: {row}'
                assert 'too small' in row[path], f'{case}: {row}'
    assert any(r['canonical'] != 'ok' for r in rows) and any(r['canonical'] == 'ok' for r in rows)
    assert {r['size'][0] for r in rows if r['fused'] == 'ok'} == {0, 1, 2, 3}


def test_kernels_accept_empty_inputs_and_write_nothing(script_rows):
    rows = [row for row in script_rows if 'shape' in row]
    assert len(rows) == 5 and all(r['unchanged'] for r in rows), rows


def assert_same_values(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Equal NaN / +inf / -inf positions, finite values within 1e-5 (relative)."""
    assert torch.equal(a.isnan(), b.isnan()), f'{what}: NaN positions differ'
    assert torch.equal(a == float('inf'), b == float('inf')), f'{what}: +inf positions differ'
    assert torch.equal(a == -float('inf'), b == -float('inf')), f'{what}: -inf positions differ'
    finite = a.isfinite()
    if finite.any():
        assert rel_diff(a[finite], b[finite]) < 1e-5, what


@pytest.mark.parametrize('act', ['ReLU', 'HSwish'])
@pytest.mark.parametrize('with_se', [False, True])
def test_nan_and_inf_propagate_through_the_kernels_as_in_pytorch(act, with_se):
    torch.manual_seed(0)
    layer = randomise_bn(DenseLayer(16, 8, 4, 4, 4, act_cfg=dict(type=act), with_se=with_se,
                                    deploy=True)).eval()
    buf = torch.randn(2, 24, 6, 7)
    buf[0, 3, 2, 4] = float('nan')
    buf[1, 5, 0, 0] = float('inf')
    buf[1, 7, 5, 6] = -float('inf')
    canonical = layer(buf[:, :16])  # autograd: module by module
    assert canonical.isnan().any()
    for native_on in (True, False):
        out = buf.clone()
        with torch.no_grad(), ops.native_kernels(native_on):
            layer.write_features_(out, 16)
        assert_same_values(out, canonical.detach(), f'native={native_on}')


@pytest.mark.parametrize('gate', ['sigmoid', 'hsigmoid'])
def test_se_kernel_propagates_nan_as_squeeze_excitation(gate):
    torch.manual_seed(0)
    se = SqueezeExcitation(8, reduction=2, gate=gate, bias=True).eval()
    buf = torch.randn(2, 16, 4, 5)
    buf[0, 9, 1, 1] = float('nan')
    expected = buf.clone()
    with torch.no_grad():
        expected[:, 8:] *= se.excitation(expected[:, 8:])
    ops.se_(buf, 8, 8, *se_arguments(se))
    assert_same_values(buf, expected, gate)
    assert expected[0, 8:].isnan().all() and not expected[1].isnan().any()


def test_model_outputs_keep_nan_where_pytorch_does():
    x = torch.rand(1, 3, 48, 40)
    x[0, :, 20, 13] = float('nan')
    for cls, arch in MODELS[:2]:
        model = deploy_model(cls, arch)
        canonical = model(x)
        with torch.no_grad():
            fused = model(x)
        for a, b in zip(fused, canonical):
            assert_same_values(a, b.detach(), cls.__name__)


def test_native_kernels_switch_is_per_thread():
    seen = {}
    switched_off = threading.Event()
    other_done = threading.Event()

    def other() -> None:
        switched_off.wait(timeout=30)
        seen['other'] = ops.native_enabled()
        with ops.native_kernels(False):  # ends before the main thread looks again
            seen['other off'] = ops.native_enabled()
        other_done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with ops.native_kernels(False):
        switched_off.set()
        other_done.wait(timeout=30)
        seen['main'] = ops.native_enabled()
    thread.join()
    assert seen == {'other': True, 'other off': False, 'main': False}
    assert ops.native_enabled()


def test_environment_switch_applies_to_every_thread():
    result = run_script('environment', MMSFR_NATIVE='0')
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == dict(main=False, thread=False, thread_on=True,
                                             main_after=False)


def environment_switch() -> None:
    """Print which threads use the kernels under the process's ``MMSFR_NATIVE``."""
    seen = {'main': ops.native_enabled()}

    def other() -> None:
        seen['thread'] = ops.native_enabled()
        with ops.native_kernels(True):
            seen['thread_on'] = ops.native_enabled()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    seen['main_after'] = ops.native_enabled()
    print(json.dumps(seen))


if __name__ == '__main__':
    for task in sys.argv[1:]:
        {'sizes': sweep_sizes, 'empty': empty_kernel_calls,
         'environment': environment_switch}[task]()
