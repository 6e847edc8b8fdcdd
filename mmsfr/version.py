"""Version of mmsfr and the versions of the stack it supports."""

__version__ = '0.1.0'

#: Inclusive lower and exclusive upper bounds of the supported dependency versions:
#: the single source of ``install_requires`` (setup.py) and of the import-time check.
#: Tested at both ends: requirements/lock.txt (the newest stack, ``make setup``) and
#: requirements/oldest.txt (``make test-oldest``).
REQUIRED_VERSIONS: dict[str, tuple[str, str]] = {
    'torch': ('2.1.0', '2.15.0'),
    'mmcv': ('2.0.0', '2.2.0'),
    'mmengine': ('0.10.0', '0.11.0'),
    'mmdet': ('3.0.0', '3.4.0'),
    'mmpretrain': ('1.0.0', '1.3.0'),
}
