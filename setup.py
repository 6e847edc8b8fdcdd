"""mmsfr: sparse-feature-reactivation detection backbones for MMDetection."""
from pathlib import Path

from setuptools import find_packages, setup


def read_requirements(name: str) -> list[str]:
    lines = Path('requirements', name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith('#')]


version: dict = {}
exec(Path('mmsfr/version.py').read_text(), version)

setup(
    name='mmsfr',
    version=version['__version__'],
    description='CondenseNetV2 / SFR-ShuffleNet backbones for MMDetection and mmpretrain',
    long_description=Path('README.md').read_text() if Path('README.md').exists() else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['mmsfr', 'mmsfr.*']),
    install_requires=read_requirements('torch.txt') + read_requirements('mmcv.txt') +
    read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt'), 'deploy': read_requirements('deploy.txt')},
    license='Apache-2.0',
)
