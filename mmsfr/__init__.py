"""mmsfr: detection backbones with sparse feature reactivation for MMDetection.

Importing mmsfr checks the OpenMMLab stack's versions, lets ``torch.load`` read
mmengine's own checkpoints with ``weights_only=True``, and registers every mmsfr
model, hook and transform in mmengine's root registries (visible from both the
``mmdet`` and the ``mmpretrain`` scope). Configs load it with::

    custom_imports = dict(imports=['mmsfr'], allow_failed_imports=False)
"""
from .utils.version_check import check_versions
from .version import __version__

check_versions()

from .utils.safe_checkpoint import allow_mmengine_checkpoints  # noqa: E402

allow_mmengine_checkpoints()

from . import datasets, engine, models  # noqa: E402,F401

__all__ = ['__version__']
