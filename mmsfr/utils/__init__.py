"""Utilities: version guard, safe checkpoint loading."""
from .safe_checkpoint import allow_mmengine_checkpoints, mmengine_checkpoint_globals
from .version_check import check_versions

__all__ = ['allow_mmengine_checkpoints', 'check_versions', 'mmengine_checkpoint_globals']
