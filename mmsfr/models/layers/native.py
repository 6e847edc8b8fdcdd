"""Deprecated address: the C++ operators moved to :mod:`mmsfr.ops` (loading, switch,
wrappers) and their arguments to :mod:`mmsfr.models.layers.dense_plan`. The old names
still work here, each with a ``DeprecationWarning`` naming its new address.

Example:
    >>> from mmsfr import ops
    >>> with ops.native_kernels(False):
    ...     ops.native_enabled()
    False
"""
from ...utils.moved import moved_names

#: Names that moved out of this module (importable here still, with a warning).
__getattr__ = moved_names(__name__, {
    **{name: 'mmsfr.ops' for name in ('STATUS', 'native_available', 'native_enabled',
                                      'native_kernels')},
    **{name: 'mmsfr.models.layers.dense_plan' for name in ('activation_code',
                                                          'se_arguments')},
})
