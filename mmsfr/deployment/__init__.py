"""Deployment: ONNX export of mmsfr models in their deploy form, with its check.

The steps, one module each:

* :mod:`~mmsfr.deployment.loading`: config + checkpoint -> :class:`ExportModule`
  (``image -> logits`` or ``image -> backbone features``), through
  :func:`mmsfr.apis.init_model`; a model still in its train-time (masked) form is
  refused (:func:`check_deploy_form`);
* :mod:`~mmsfr.deployment.export`: the dynamic graph (:func:`export_dynamic`), the
  written file (:func:`export_onnx`) and the checked export (:func:`export_verified`);
* :mod:`~mmsfr.deployment.graph_passes`: rewrites of the graph
  (:func:`split_repeated_scatter_adds`, :func:`specialise`) and :func:`onnx_op_counts`;
* :mod:`~mmsfr.deployment.verify`: ``onnx.checker`` and onnxruntime against PyTorch
  (:func:`verify_onnx`, :class:`VerificationReport`, :func:`format_reports`).

Needs the ``deploy`` requirements (``pip install -r requirements/deploy.txt``: onnx,
onnxscript, onnxruntime); ``import mmsfr`` itself does not import this package.
"""
from .export import DEFAULT_OPSET, ExportResult, export_dynamic, export_onnx, export_verified
from .graph_passes import onnx_op_counts, specialise, split_repeated_scatter_adds
from .loading import ExportModule, TrainTimeModelError, check_deploy_form, load_export_module
from .verify import (DEFAULT_RTOL, VerificationError, VerificationReport, alternative_size,
                     format_reports, verify_onnx)

__all__ = [
    'DEFAULT_OPSET', 'DEFAULT_RTOL', 'ExportModule', 'ExportResult', 'TrainTimeModelError',
    'VerificationError', 'VerificationReport', 'alternative_size', 'check_deploy_form',
    'export_dynamic', 'export_onnx', 'export_verified', 'format_reports',
    'load_export_module', 'onnx_op_counts', 'specialise', 'split_repeated_scatter_adds',
    'verify_onnx'
]
