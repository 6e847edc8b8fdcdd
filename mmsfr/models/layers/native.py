"""Deprecated alias: the C++ operators moved to :mod:`mmsfr.ops` (loading, switch,
wrappers) and :mod:`mmsfr.models.layers.dense_plan` (their arguments).

Example:
    >>> from mmsfr import ops
    >>> with ops.native_kernels(False):
    ...     ops.native_enabled()
    False
"""
import warnings

from ...ops import STATUS, native_available, native_enabled, native_kernels  # noqa: F401
from .dense_plan import activation_code, se_arguments  # noqa: F401

warnings.warn('mmsfr.models.layers.native is deprecated: use mmsfr.ops (native_available, '
              'native_enabled, native_kernels) and mmsfr.models.layers.dense_plan',
              DeprecationWarning, stacklevel=2)
