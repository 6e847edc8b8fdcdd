"""mmsfr: detection backbones with sparse feature reactivation for MMDetection.

Importing mmsfr checks the OpenMMLab stack's versions, lets ``torch.load`` read
mmengine's own checkpoints with ``weights_only=True``, and registers every mmsfr
model, hook and transform in mmengine's root registries (visible from both the
``mmdet`` and the ``mmpretrain`` scope). Configs load it with::

    custom_imports = dict(imports=['mmsfr'], allow_failed_imports=False)
"""
import warnings as _warnings

# The OpenMMLab stack may import pkg_resources, whose import warns that it is deprecated
# (setuptools < 81 is needed to build mmcv). While the stack is imported here exactly
# that message is ignored; afterwards exactly these filters are removed again, so the
# filters the stack itself installs stay (catch_warnings() would undo them). The tools
# do the same for their whole run: mmsfr.utils.cli.quiet_pkg_resources.
_QUIET = []
for _category in (UserWarning, DeprecationWarning):
    _warnings.filterwarnings('ignore', message=r'pkg_resources is deprecated as an API',
                             category=_category)
    _QUIET.append(_warnings.filters[0])
try:
    from .utils.version_check import check_versions
    from .version import __version__

    check_versions()

    from .utils.safe_checkpoint import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()

    from . import datasets, engine, models  # noqa: F401
finally:
    for _entry in _QUIET:
        if _entry in _warnings.filters:
            _warnings.filters.remove(_entry)
    del _QUIET, _category, _entry

__all__ = ['__version__']
