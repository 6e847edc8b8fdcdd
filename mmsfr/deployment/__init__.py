"""Deployment: ONNX export of mmsfr models in their deploy form, with its check.

Needs the ``deploy`` requirements (``pip install -r requirements/deploy.txt``: onnx,
onnxscript, onnxruntime); ``import mmsfr`` itself does not import this package.
"""
from .onnx_export import (DEFAULT_OPSET, DEFAULT_RTOL, ExportModule, ExportResult,
                          TrainTimeModelError, VerificationError, VerificationReport,
                          alternative_size, check_deploy_form, export_dynamic, export_onnx,
                          export_verified, format_reports, load_export_module,
                          onnx_op_counts, specialise, split_repeated_scatter_adds,
                          verify_onnx)

__all__ = [
    'DEFAULT_OPSET', 'DEFAULT_RTOL', 'ExportModule', 'ExportResult', 'TrainTimeModelError',
    'VerificationError', 'VerificationReport', 'alternative_size', 'check_deploy_form',
    'export_dynamic', 'export_onnx', 'export_verified', 'format_reports',
    'load_export_module', 'onnx_op_counts', 'specialise', 'split_repeated_scatter_adds',
    'verify_onnx'
]
