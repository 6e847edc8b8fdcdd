"""A crafted checkpoint runs no code: not through any tool, not through mmengine's loaders.

The gadget is the one that worked while ``builtins.getattr`` and ``HistoryBuffer``
were on the weights-only allow-list: ``getattr(getattr, '__self__')`` is the builtins
module, ``getattr(builtins, 'eval')`` is ``eval``; ``torch._utils._rebuild_parameter``'s
globals get ``torch`` = a HistoryBuffer whose ``.nn.Parameter`` is ``eval`` (its
``__setstate__`` took any attribute), and the allowed ``_rebuild_parameter`` then calls
``eval`` on the pickled code, which would create a marker file.
"""
from __future__ import annotations

import argparse
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from conftest import DIGITS_DEPLOY_CFG, REPO, digits_config, write_digits_folder

DEPLOY_CFG = DIGITS_DEPLOY_CFG
NEEDS_ALLOW_LIST = pytest.mark.skipif(
    tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]) < (2, 6),
    reason='torch < 2.6 unpickles fully by default (mmengine loads with it)')


def _text(s: str) -> bytes:
    data = s.encode()
    return pickle.BINUNICODE + struct.pack('<I', len(data)) + data


def _memo(op: bytes, index: int) -> bytes:
    return op + bytes([index])


def gadget_pickle(marker: Path) -> bytes:
    """Protocol-2 pickle of the gadget described in the module docstring."""
    p = pickle
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    ops = bytearray(p.PROTO + b'\x02' + p.EMPTY_LIST + p.MARK)
    ops += p.GLOBAL + b'__builtin__\ngetattr\n' + _memo(p.BINPUT, 0)
    ops += p.GLOBAL + b'mmengine.logging.history_buffer\nHistoryBuffer\n' + _memo(p.BINPUT, 1)
    # 2: the builtins module = getattr(getattr, '__self__'); 3: eval
    ops += (_memo(p.BINGET, 0) + _memo(p.BINGET, 0) + _text('__self__') + p.TUPLE2 + p.REDUCE
            + _memo(p.BINPUT, 2))
    ops += (_memo(p.BINGET, 0) + _memo(p.BINGET, 2) + _text('eval') + p.TUPLE2 + p.REDUCE
            + _memo(p.BINPUT, 3))
    # torch._utils' globals['torch'] = HistoryBuffer(nn=HistoryBuffer(Parameter=eval))
    ops += (_memo(p.BINGET, 0) + p.GLOBAL + b'torch._utils\n_rebuild_parameter\n'
            + _text('__globals__') + p.TUPLE2 + p.REDUCE + p.MARK + _text('torch'))
    ops += _memo(p.BINGET, 1) + p.EMPTY_TUPLE + p.NEWOBJ + p.EMPTY_DICT + _text('nn')
    ops += (_memo(p.BINGET, 1) + p.EMPTY_TUPLE + p.NEWOBJ + p.EMPTY_DICT + _text('Parameter')
            + _memo(p.BINGET, 3) + p.SETITEM + p.BUILD)
    ops += p.SETITEM + p.BUILD + p.SETITEMS
    # the allowed _rebuild_parameter(code, {}, {}) now evaluates the code
    ops += (p.GLOBAL + b'torch._utils\n_rebuild_parameter\n' + p.MARK + _text(code)
            + p.EMPTY_DICT + p.EMPTY_DICT + p.TUPLE + p.REDUCE)
    return bytes(ops + p.APPENDS + p.STOP)


class _RawPickle:
    """A ``pickle_module`` for ``torch.save`` that writes given pickle bytes verbatim, so
    the gadget sits in a genuine torch zip checkpoint."""

    class Pickler:
        def __init__(self, file, protocol=None):
            self.file = file

        def dump(self, data: bytes) -> None:
            self.file.write(data)


def write_gadget(path: Path, marker: Path) -> Path:
    torch.save(gadget_pickle(marker), path, pickle_module=_RawPickle)
    return path


def run(*args, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith('error:')]


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    """A 10-class folder dataset (one 16x16 image a class) and a config on it."""
    root = write_digits_folder(tmp_path_factory.mktemp('digits'))
    return digits_config(root / 'digits_cfg.py', root)


def _tool_args(tool: str, digits: Path, ckpt: Path, tmp: Path) -> list:
    return {
        'convert_to_deploy': ['tools/convert_to_deploy.py', digits, ckpt, tmp / 'out.pth'],
        'official_to_mmsfr': ['tools/model_converters/official_to_mmsfr.py', '--model',
                              'condensenetv2_a', ckpt, tmp / 'out.pth'],
        'plot_connectivity': ['tools/analysis_tools/plot_connectivity.py', ckpt, '--out',
                              tmp / 'plots'],
        'export_onnx': ['tools/deployment/export_onnx.py', DEPLOY_CFG, ckpt, tmp / 'out.onnx',
                        '--shape', '16'],
        'test': ['tools/test.py', digits, ckpt, '--work-dir', tmp / 'work'],
    }[tool]


@pytest.mark.parametrize('tool', ['convert_to_deploy', 'official_to_mmsfr',
                                  'plot_connectivity', 'export_onnx',
                                  'test'])
def test_every_tool_refuses_the_gadget_and_runs_nothing(tool, digits, tmp_path):
    marker = tmp_path / 'pwned'
    ckpt = write_gadget(tmp_path / 'gadget.pth', marker)
    out = run(*_tool_args(tool, digits, ckpt, tmp_path))
    assert not marker.exists(), f'{tool} ran the pickled code'
    assert out.returncode == 1, out.stderr[-2000:]
    assert 'Traceback' not in out.stderr
    lines = error_lines(out.stderr)
    assert len(lines) == 1 and f'refusing to load checkpoint {ckpt}' in lines[0], out.stderr
    assert 'getattr' in lines[0]  # what was refused is named
    assert not [p for p in tmp_path.iterdir() if p.name not in ('gadget.pth', 'work')]


@pytest.mark.parametrize('how', ['load_from', 'resume'])
def test_train_refuses_a_gadget_given_as_load_from_or_resume(how, digits, tmp_path):
    """tools/train.py reads the checkpoint restricted before mmengine loads it (which on
    torch < 2.6 would unpickle it fully)."""
    marker = tmp_path / 'pwned'
    ckpt = write_gadget(tmp_path / 'gadget.pth', marker)
    extra = (['--cfg-options', f'load_from={ckpt}'] if how == 'load_from'
             else ['--resume', ckpt])
    out = run('tools/train.py', digits, '--work-dir', tmp_path / 'work', *extra)
    assert not marker.exists(), 'the pickled code ran'
    lines = error_lines(out.stderr)
    assert out.returncode == 1 and len(lines) == 1, out.stderr[-2000:]
    assert 'refusing to load' in lines[0] and str(ckpt) in lines[0]


@NEEDS_ALLOW_LIST
def test_mmengine_loaders_refuse_the_gadget_after_import_mmsfr(tmp_path):
    marker = tmp_path / 'pwned'
    ckpt = write_gadget(tmp_path / 'gadget.pth', marker)
    code = (
        'import sys, torch, mmsfr\n'
        'from mmengine.runner import CheckpointLoader, load_checkpoint\n'
        'path = sys.argv[1]\n'
        'loads = dict(CheckpointLoader=lambda: CheckpointLoader.load_checkpoint(path),\n'
        '             load_checkpoint=lambda: load_checkpoint(torch.nn.Linear(1, 1), path),\n'
        '             torch_load=lambda: torch.load(path))\n'
        'for name, load in loads.items():\n'
        '    try:\n'
        '        load()\n'
        '    except Exception as err:\n'
        '        print(name, type(err).__name__)\n'
        '    else:\n'
        '        print(name, "loaded")\n')
    out = subprocess.run([sys.executable, '-c', code, str(ckpt)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert not marker.exists(), 'the pickled code ran'
    assert out.returncode == 0, out.stderr[-2000:]
    results = [line for line in out.stdout.splitlines() if ' - mmengine - ' not in line
               and not line.startswith('Loads checkpoint')]
    assert results == ['CheckpointLoader UnpicklingError', 'load_checkpoint UnpicklingError',
                       'torch_load UnpicklingError'], out.stdout


# ---------------------------------------------------------------- the allow-list itself
class _Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _load(obj, tmp_path: Path):
    path = tmp_path / 'x.pth'
    torch.save(obj, path)
    return torch.load(path, weights_only=True)


@NEEDS_ALLOW_LIST
def test_allow_list_holds_no_getattr_and_no_history_buffer_class():
    import builtins
    entries = torch.serialization.get_safe_globals()
    objects = [e[0] if isinstance(e, tuple) else e for e in entries]
    assert builtins.getattr not in objects and HistoryBuffer not in objects
    names = {e[1] for e in entries if isinstance(e, tuple)}
    assert {'builtins.getattr', 'mmengine.logging.history_buffer.HistoryBuffer'} <= names


@NEEDS_ALLOW_LIST
def test_history_buffer_round_trip_is_genuine(tmp_path):
    buf = HistoryBuffer([1.0, 2.0, 4.0], [1, 1, 2])
    got = _load({'buf': buf, 'empty': HistoryBuffer()}, tmp_path)
    assert type(got['buf']) is HistoryBuffer and type(got['empty']) is HistoryBuffer
    assert np.array_equal(got['buf']._log_history, buf._log_history)
    assert float(got['buf'].mean()) == 7.0 / 4 and float(got['buf'].statistics('max')) == 4.0
    assert got['empty']._log_history.size == 0


@NEEDS_ALLOW_LIST
@pytest.mark.parametrize('what', ['extra attribute', '2-d history', 'other method',
                                  'getattr of anything', 'bytes of a size'])
def test_tampered_history_state_is_refused(what, tmp_path):
    buf = HistoryBuffer([1.0], [1])
    if what == 'extra attribute':
        buf.nn = 'planted'
        obj, match = buf, r"field\(s\) \['nn'\]"
    elif what == '2-d history':
        buf._log_history = np.zeros((2, 2))
        obj, match = buf, '1-d numeric numpy array'
    elif what == 'other method':
        obj, match = _Reduce(getattr, HistoryBuffer, 'update'), "getattr.*'update'"
    elif what == 'getattr of anything':
        obj, match = _Reduce(getattr, {}, 'pop'), "getattr.*'pop'"
    else:
        obj, match = _Reduce(bytes, 10 ** 9), 'bytes'
    with pytest.raises(pickle.UnpicklingError, match=match):
        _load({'obj': obj}, tmp_path)


# ------------------------------------------------- torch < 2.6: the restricted unpickler
def test_restricted_pickle_module_refuses_the_gadget_and_reads_real_checkpoints(tmp_path):
    """The reader torch < 2.6 uses (``find_class`` limited to the same allow-list):
    tested on every torch by calling it directly."""
    from mmsfr.utils.safe_checkpoint import restricted_pickle_module

    marker = tmp_path / 'pwned'
    ckpt = write_gadget(tmp_path / 'gadget.pth', marker)
    with pytest.raises(pickle.UnpicklingError, match='mmsfr safe loading: '):
        torch.load(ckpt, weights_only=False, pickle_module=restricted_pickle_module())
    assert not marker.exists(), 'the pickled code ran'

    runner_ckpt = tmp_path / 'runner.pth'  # mmengine training state and released args
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(1.5)
    torch.save({'state_dict': {'w': torch.ones(2)}, 'args': argparse.Namespace(lr=0.1),
                'message_hub': {'log_scalars': {'loss': buffer}}}, runner_ckpt)
    got = torch.load(runner_ckpt, weights_only=False, pickle_module=restricted_pickle_module())
    assert torch.equal(got['state_dict']['w'], torch.ones(2))
    assert got['args'] == argparse.Namespace(lr=0.1)
    assert type(got['message_hub']['log_scalars']['loss']) is HistoryBuffer
    assert got['message_hub']['log_scalars']['loss'].current() == 1.5
