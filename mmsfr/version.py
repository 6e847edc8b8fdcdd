"""Version of mmsfr and the versions of the stack it is tested against."""

__version__ = '0.1.0'

#: Inclusive lower and exclusive upper bounds of the supported dependency versions.
REQUIRED_VERSIONS: dict[str, tuple[str, str]] = {
    'torch': ('2.6.0', '2.15.0'),
    'mmcv': ('2.1.0', '2.2.0'),
    'mmengine': ('0.10.7', '0.11.0'),
    'mmdet': ('3.3.0', '3.4.0'),
    'mmpretrain': ('1.2.0', '1.3.0'),
}
