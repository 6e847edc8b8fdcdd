"""How mmsfr.models.layers.native loads the optional extension (no build needed)."""
import types

import pytest

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


def test_a_complete_extension_is_used(monkeypatch):
    full = types.SimpleNamespace(API_VERSION=native.API_VERSION,
                                 **{name: None for name in native.REQUIRED})
    assert load_with(monkeypatch, full) == (full, 'built')
