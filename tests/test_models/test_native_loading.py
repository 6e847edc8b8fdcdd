"""How mmsfr.models.layers.native loads the optional extension (no build needed)."""
import types
import warnings

import pytest
import torch

from mmsfr.models.layers import native


def load_with(monkeypatch, result):
    def import_module(name):
        assert name == 'mmsfr._ext'
        if isinstance(result, Exception):
            raise result
        return result
    monkeypatch.setattr(native.importlib, 'import_module', import_module)
    return native._load()


def test_a_missing_extension_means_pytorch_ops_and_says_how_to_build(monkeypatch):
    ext, status = load_with(monkeypatch, ModuleNotFoundError('no', name='mmsfr._ext'))
    assert ext is None and 'pip install --no-build-isolation -e .' in status


def test_an_extension_from_older_sources_is_not_used(monkeypatch):
    # A build from before the SE and pooling kernels and the thread probe (and OpenMP).
    old = types.SimpleNamespace(lgc_conv_=None, sfr_=None, uses_avx2=None, set_avx2=None)
    with pytest.warns(UserWarning, match=r'out of date \(no se_, avg_pool2x2_, parallel_threads\)'):
        ext, status = load_with(monkeypatch, old)
    assert ext is None and status.startswith('out of date')


def test_an_extension_that_fails_to_load_warns(monkeypatch):
    with pytest.warns(UserWarning, match='could not be loaded.*undefined symbol'):
        ext, status = load_with(monkeypatch, ImportError('undefined symbol: _ZN3c10'))
    assert ext is None and 'undefined symbol' in status


def test_an_extension_with_the_previous_kernel_arguments_is_not_used(monkeypatch):
    # Same function names, but the kernels took pre-folded BN scales and GEMM matrices.
    old = types.SimpleNamespace(**{name: None for name in native.REQUIRED})
    with pytest.warns(UserWarning, match='kernel arguments of version 1, this mmsfr needs 2'):
        ext, status = load_with(monkeypatch, old)
    assert ext is None and status.startswith('out of date')


def complete_extension(parallel_threads):
    """A stand-in for a current build whose thread probe is ``parallel_threads``."""
    functions = dict.fromkeys(native.REQUIRED)
    functions['parallel_threads'] = parallel_threads
    return types.SimpleNamespace(API_VERSION=native.API_VERSION, **functions)


def test_a_complete_extension_is_used(monkeypatch):
    full = complete_extension(lambda tasks: min(tasks, torch.get_num_threads()))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert load_with(monkeypatch, full) == (full, 'built')


@pytest.mark.parametrize('threads', [2, 8])
def test_an_extension_built_without_openmp_warns_once_that_it_runs_on_one_thread(
        monkeypatch, threads):
    asked = []

    def serial(tasks):  # what a build without -fopenmp reports
        asked.append(tasks)
        return 1

    monkeypatch.setattr(torch, 'get_num_threads', lambda: threads)
    serial_build = complete_extension(serial)
    with pytest.warns(UserWarning) as record:
        assert load_with(monkeypatch, serial_build) == (serial_build, 'built')  # still used
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and asked == [threads]
    assert messages[0].startswith(f'mmsfr._ext was built without OpenMP, so its C++ kernels '
                                  f'run on one thread while torch uses {threads}')
    assert 'MMSFR_NATIVE=0' in messages[0]


def test_one_torch_thread_is_no_reason_to_warn(monkeypatch):
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 1)
    serial_build = complete_extension(lambda tasks: 1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert load_with(monkeypatch, serial_build) == (serial_build, 'built')
