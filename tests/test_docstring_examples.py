"""Every ``Example:`` in mmsfr's docstrings runs and prints what it shows."""
import doctest
import importlib
import pkgutil

import pytest

import mmsfr

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(mmsfr.__path__, 'mmsfr.'))


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f'{result.failed} of {result.attempted} examples failed'
