"""mmsfr: sparse-feature-reactivation detection backbones for MMDetection.

Builds the optional C++ extension ``mmsfr._ext`` (fused CPU kernels of the deploy
CondenseNetV2 layers) when torch is importable, i.e. with
``pip install --no-build-isolation -e .`` after torch. ``MMSFR_WITH_OPS=0`` skips it;
without it mmsfr runs the same models with PyTorch ops only.
"""
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup


def read_requirements(name: str) -> list[str]:
    lines = Path('requirements', name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith('#')]


def openmp_backend() -> bool:
    """Whether torch runs ``at::parallel_for`` on OpenMP (Linux wheels do).

    ATen's OpenMP ``parallel_for`` is inline code in its headers: an extension compiled
    without ``-fopenmp`` runs it on one thread. Linking ``-fopenmp`` adds a dependency
    on ``libgomp.so.1``, which resolves to the copy torch has already loaded.
    """
    import torch
    return (sys.platform.startswith('linux')
            and 'parallel backend: OpenMP' in torch.__config__.parallel_info())


def skip_note(why: str) -> None:
    """Say why mmsfr installs without its C++ kernels (it then runs PyTorch ops)."""
    print(f'WARNING: mmsfr._ext is not built ({why}); mmsfr will run its models with '
          'PyTorch ops only (same results, slower deploy CondenseNetV2 on CPU)',
          file=sys.stderr)


def extensions() -> dict:
    """``ext_modules`` / ``cmdclass`` of the C++ extension, or nothing.

    The extension is optional: no torch at build time (an isolated build), Windows
    (the kernels use GCC/Clang vector extensions, which MSVC lacks), or a failed
    compile all install mmsfr without it, with a warning.
    """
    if os.environ.get('MMSFR_WITH_OPS', '1') == '0':
        return {}
    if sys.platform == 'win32':
        skip_note('the kernels need GCC or Clang vector extensions, not MSVC')
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # e.g. an isolated build without torch: pure-PyTorch install
        skip_note('torch is not importable at build time: use --no-build-isolation')
        return {}

    class OptionalBuildExtension(BuildExtension):
        """torch's ``BuildExtension``; a failed compile of an optional extension warns.

        setuptools' ``optional=True`` only catches distutils' compiler errors, while
        torch's ninja build raises ``RuntimeError``.
        """

        def build_extension(self, ext) -> None:
            try:
                super().build_extension(ext)
            except Exception as err:  # noqa: BLE001 (any compile failure)
                if not getattr(ext, 'optional', False):
                    raise
                skip_note(f'compiling {ext.name} failed: {str(err).splitlines()[-1]}')

    # (-fno-math-errno: sqrt need not set errno, so loops of it vectorise.)
    flags, link_flags = ['-O3', '-fno-math-errno'], []
    if openmp_backend():
        flags.append('-fopenmp')
        link_flags.append('-fopenmp')
    else:
        print('WARNING: torch does not run on OpenMP here (e.g. macOS): mmsfr._ext is '
              'built without it and its kernels run on one thread', file=sys.stderr)
    ext = CppExtension('mmsfr._ext', ['mmsfr/csrc/ops.cpp', 'mmsfr/csrc/cpu/dense_layer.cpp'],
                       depends=['mmsfr/csrc/cpu/dense_layer.h', 'mmsfr/csrc/cpu/kernels.h'],
                       extra_compile_args=flags, extra_link_args=link_flags, optional=True)
    return dict(ext_modules=[ext], cmdclass={'build_ext': OptionalBuildExtension})


def ship_configs() -> dict:
    """Ship the configs inside the package as OpenMMLab packages do (for mim).

    ``mmsfr/.mim/`` gets ``configs/`` and ``model-index.yml``, where mim and
    ``mmsfr.apis.init_model`` (config names) look for them: an editable install
    (``pip install -e .``: setuptools' ``editable_wheel`` or ``develop``) links them
    (relative links; copies on Windows), a wheel or sdist build copies them; other
    commands (``egg_info``, ``build_ext --inplace``, ...) leave ``mmsfr/.mim`` as it
    is. Building a wheel from an sdist (no ``configs/`` there) keeps the sdist's copy.

    Returns:
        The ``package_data`` that puts the copies into wheels and sdists.
    """
    import shutil

    commands = set(sys.argv[1:])
    editable = bool(commands & {'develop', 'editable_wheel'})
    if editable or commands & {'bdist_wheel', 'sdist', 'build', 'build_py', 'install'}:
        mim = Path('mmsfr', '.mim')
        mim.mkdir(exist_ok=True)
        for name in ('configs', 'model-index.yml'):
            if not Path(name).exists():
                continue
            dst = mim / name
            if dst.is_symlink() or dst.is_file():
                dst.unlink()
            elif dst.is_dir():
                shutil.rmtree(dst)
            if editable and sys.platform != 'win32':
                dst.symlink_to(Path('..', '..', name))
            elif Path(name).is_dir():
                shutil.copytree(name, dst)
            else:
                shutil.copyfile(name, dst)
    return {'mmsfr': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                      '.mim/configs/**/*.yml']}


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
    package_data=ship_configs(),
    install_requires=read_requirements('torch.txt') + read_requirements('mmcv.txt') +
    read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt'), 'deploy': read_requirements('deploy.txt')},
    license='Apache-2.0',
    **extensions(),
)
