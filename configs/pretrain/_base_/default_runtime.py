# mmpretrain's runtime + mmsfr registration.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmsfr'], allow_failed_imports=False)
