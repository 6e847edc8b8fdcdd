"""Deprecated module path, kept so that old imports keep working.

ONNX export used to live here in one module; it is now split by step (see
:mod:`mmsfr.deployment`): :mod:`~mmsfr.deployment.loading`,
:mod:`~mmsfr.deployment.export`, :mod:`~mmsfr.deployment.graph_passes` and
:mod:`~mmsfr.deployment.verify`. Import from :mod:`mmsfr.deployment` instead. The names
below are the same objects (patching them here does not change what the new modules
call).
"""
from .export import (DEFAULT_OPSET, INPUT_NAME, ExportResult, export_dynamic,  # noqa: F401
                     export_onnx, export_verified)
from .graph_passes import (DYNAMIC_DIMS, onnx_op_counts, specialise,  # noqa: F401
                           split_repeated_scatter_adds)
from .loading import (ExportModule, TrainTimeModelError, check_deploy_form,  # noqa: F401
                      load_export_module)
from .verify import (DEFAULT_RTOL, Comparison, VerificationError,  # noqa: F401
                     VerificationReport, alternative_size, format_reports, verify_onnx)

__all__ = [
    'DEFAULT_OPSET', 'DEFAULT_RTOL', 'DYNAMIC_DIMS', 'INPUT_NAME', 'Comparison',
    'ExportModule', 'ExportResult', 'TrainTimeModelError', 'VerificationError',
    'VerificationReport', 'alternative_size', 'check_deploy_form', 'export_dynamic',
    'export_onnx', 'export_verified', 'format_reports', 'load_export_module',
    'onnx_op_counts', 'specialise', 'split_repeated_scatter_adds', 'verify_onnx'
]
