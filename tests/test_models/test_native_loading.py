"""How mmsfr.ops loads the optional extension (no build needed)."""
import types
import warnings

import pytest
import torch

from mmsfr.ops import loading


def load_with(monkeypatch, result, ops=loading.REQUIRED, threads=None):
    """``loading._load()`` with ``result`` as the imported module (or the import
    error), ``ops`` as the registered operators and ``threads`` as the thread probe."""
    def import_module(name):
        assert name == 'mmsfr._ext'
        if isinstance(result, Exception):
            raise result
        return result
    monkeypatch.setattr(loading.importlib, 'import_module', import_module)
    monkeypatch.setattr(loading, 'has_op', lambda name: name in ops)
    monkeypatch.setattr(loading, '_parallel_threads',
                        threads or (lambda tasks: min(tasks, torch.get_num_threads())))
    return loading._load()[:2]


def _kernel(*args):
    pass


#: An extension module of this version: its API_VERSION and kernel bindings.
CURRENT = types.SimpleNamespace(API_VERSION=loading.API_VERSION,
                                **{name: _kernel for name in loading.KERNELS})


def test_a_missing_extension_means_pytorch_ops_and_says_how_to_build(monkeypatch):
    usable, status = load_with(monkeypatch, ModuleNotFoundError('no', name='mmsfr._ext'))
    assert not usable and 'pip install --no-build-isolation -e .' in status


def test_an_extension_missing_operators_is_not_used(monkeypatch):
    some = ('lgc_conv_', 'sfr_', 'isa', 'best_isa', 'set_isa')
    with pytest.warns(UserWarning, match=r'out of date \(no se_, avg_pool2x2_, linear_, '
                      r'parallel_threads\)'):
        usable, status = load_with(monkeypatch, CURRENT, ops=some)
    assert not usable and status.startswith('out of date')


def test_an_extension_missing_kernel_bindings_is_not_used(monkeypatch):
    partial = types.SimpleNamespace(API_VERSION=loading.API_VERSION, lgc_conv_=_kernel,
                                    sfr_=_kernel, se_=_kernel, avg_pool2x2_='not callable')
    with pytest.warns(UserWarning, match=r'out of date \(no mmsfr._ext.avg_pool2x2_, '
                      r'mmsfr._ext.linear_\)'):
        usable, status = load_with(monkeypatch, partial)
    assert not usable and status.startswith('out of date')


def test_the_kernel_bindings_are_collected_only_from_a_usable_extension(monkeypatch):
    monkeypatch.setattr(loading.importlib, 'import_module', lambda name: CURRENT)
    monkeypatch.setattr(loading, 'has_op', lambda name: True)
    monkeypatch.setattr(loading, '_parallel_threads', lambda tasks: 1)
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 1)
    assert loading._load()[2] == {name: _kernel for name in loading.KERNELS}
    with pytest.warns(UserWarning, match='out of date'):
        monkeypatch.setattr(loading, 'has_op', lambda name: name != 'sfr_')
        assert loading._load()[2] == {}


def test_an_extension_that_fails_to_load_warns(monkeypatch):
    with pytest.warns(UserWarning, match='could not be loaded.*undefined symbol'):
        usable, status = load_with(monkeypatch, ImportError('undefined symbol: _ZN3c10'))
    assert not usable and 'undefined symbol' in status


@pytest.mark.parametrize('version', [1, 2])
def test_an_extension_with_previous_operator_arguments_is_not_used(monkeypatch, version):
    # 1: pre-folded BN scales; 2: a pybind module, unknown to the dispatcher.
    old = types.SimpleNamespace(API_VERSION=version) if version > 1 else types.SimpleNamespace()
    with pytest.warns(UserWarning, match=f'operator arguments of version {version}, this mmsfr '
                      f'needs {loading.API_VERSION}'):
        usable, status = load_with(monkeypatch, old)
    assert not usable and status.startswith('out of date')


def test_a_complete_extension_is_used(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert load_with(monkeypatch, CURRENT) == (True, 'built')


@pytest.mark.parametrize('threads', [2, 8])
def test_an_extension_built_without_openmp_warns_once_that_it_runs_on_one_thread(
        monkeypatch, threads):
    asked = []

    def serial(tasks):  # what a build without -fopenmp reports
        asked.append(tasks)
        return 1

    monkeypatch.setattr(torch, 'get_num_threads', lambda: threads)
    with pytest.warns(UserWarning) as record:
        assert load_with(monkeypatch, CURRENT, threads=serial) == (True, 'built')  # still used
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and asked == [threads]
    assert messages[0].startswith(f'mmsfr._ext was built without OpenMP, so its C++ kernels '
                                  f'run on one thread while torch uses {threads}')
    assert 'MMSFR_NATIVE=0' in messages[0]


def test_one_torch_thread_is_no_reason_to_warn(monkeypatch):
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert load_with(monkeypatch, CURRENT, threads=lambda tasks: 1) == (True, 'built')


def test_the_operators_are_registered_with_the_dispatcher():
    if not loading.native_available():
        pytest.skip(loading.STATUS)
    for name in loading.REQUIRED:
        assert hasattr(torch.ops.mmsfr, name)
    schema = str(torch.ops.mmsfr.lgc_conv_.default._schema)
    assert schema.startswith('mmsfr::lgc_conv_(Tensor(a!) buf, int channels, Tensor index')
    # A Meta kernel: tracing with tensors without data (torch.compile, torch.export).
    buf = torch.empty(1, 8, 4, 4, device='meta')
    torch.ops.mmsfr.avg_pool2x2_(buf, torch.empty(1, 4, 8, 8, device='meta'))
