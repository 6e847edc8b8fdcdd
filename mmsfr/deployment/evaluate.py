"""COCO evaluation of an exported detector in onnxruntime, with mmdet's post-processing.

An exported single-stage detector (``tools/deployment/export_onnx.py`` with a detector
config) computes its head's raw outputs: per level, the classification scores and box
regressions (plus, for heads that have them, score factors such as FCOS's
centerness). :func:`evaluate_onnx_detector` runs the graph in onnxruntime over the
config's test dataset and hands those outputs to the head's own
``predict_by_feat`` (anchor decoding, score threshold, NMS, rescaling to the original
image), then to the config's evaluator, exactly as ``tools/test.py`` does with the
PyTorch model. The data pipeline and the ``data_preprocessor`` (normalisation,
padding) are those of the config.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Sequence

import numpy as np
import torch

from ._onnx import cpu_session
from .loading import HEAD_PARTS

__all__ = ['OnnxDetector', 'evaluate_onnx_detector', 'group_head_outputs']

Log = Callable[[str], None]

_LEVEL_OUTPUT = re.compile(rf'^(?P<part>{"|".join(HEAD_PARTS)})(?P<level>\d+)$')


def group_head_outputs(names: Sequence[str],
                       arrays: Sequence[np.ndarray]) -> list[list[torch.Tensor]]:
    """The outputs of an exported head as ``predict_by_feat`` takes them.

    Outputs are named ``<part><level>`` with the parts of
    :data:`~mmsfr.deployment.loading.HEAD_PARTS` (e.g. ``cls_score0 ... cls_score4,
    bbox_pred0 ...``), as :class:`~mmsfr.deployment.loading.ExportModule` names a
    detector's outputs; the result has one list per part, in the order the parts first
    appear, each ordered by level.

    Raises:
        ValueError: for any other output name (e.g. a backbone's ``feat2``).

    Example:
        >>> out = group_head_outputs(['cls_score0', 'cls_score1', 'bbox_pred0', 'bbox_pred1'],
        ...                          [np.zeros((1, 2))] * 4)
        >>> [len(part) for part in out]
        [2, 2]
    """
    parts: dict[str, dict[int, torch.Tensor]] = {}
    for name, array in zip(names, arrays):
        match = _LEVEL_OUTPUT.match(name)
        if match is None:
            raise ValueError(f'output {name!r} of the graph is not a per-level head output '
                             f"({'/'.join(HEAD_PARTS)}<level>, e.g. 'cls_score0'): export "
                             'the whole detector with tools/deployment/export_onnx.py '
                             '(without --backbone-only)')
        parts.setdefault(match['part'], {})[int(match['level'])] = torch.from_numpy(array)
    return [[levels[i] for i in sorted(levels)] for levels in parts.values()]


class OnnxDetector:
    """An exported single-stage detector in onnxruntime, post-processed by mmdet.

    Args:
        model: The detector the config builds (its ``data_preprocessor`` and
            ``bbox_head.predict_by_feat`` are used; its weights are not).
        path: The ``.onnx`` file.
        threads: onnxruntime intra-op threads (None: its default).

    Example:
        >>> # detector = OnnxDetector(init_model('configs/retinanet_condensenetv2_a.py'),
        >>> #                         'retinanet.onnx')
        >>> # data_samples = detector.predict(data_batch)
    """

    def __init__(self, model: torch.nn.Module, path: str | os.PathLike,
                 threads: int | None = None) -> None:
        if not hasattr(model, 'bbox_head'):
            raise ValueError(f'{type(model).__name__} has no bbox_head: onnxruntime '
                             'evaluation covers single-stage detectors (e.g. RetinaNet)')
        self.model = model.eval()
        try:
            self.session = cpu_session(path, threads)
        except Exception as err:  # onnxruntime's own exception types, one per failure
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f'onnxruntime cannot load {os.fspath(path)}: {first} (is it '
                             'a complete .onnx file written by tools/deployment/export_onnx.py?)'
                             ) from err
        self.input = self.session.get_inputs()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _check_shape(self, shape: Sequence[int]) -> None:
        for dim, (want, got) in enumerate(zip(self.input.shape, shape)):
            if isinstance(want, int) and want != got:
                raise ValueError(
                    f'the graph takes input {self.input.shape} but the test pipeline gives '
                    f'{list(shape)} (dim {dim}); export with --dynamic-size (or a --shape '
                    'every test image pads to)')

    def _run(self, inputs: torch.Tensor) -> list[np.ndarray]:
        """The graph's outputs for a batch; a graph with a fixed batch of 1 runs the
        images one by one."""
        batch = self.input.shape[0]
        if isinstance(batch, int) and batch == 1 and inputs.shape[0] > 1:
            per_image = [self._run(image[None]) for image in inputs]
            return [np.concatenate(outs) for outs in zip(*per_image)]
        self._check_shape(inputs.shape)
        return self.session.run(self.output_names,
                                {self.input.name: inputs.numpy().astype(np.float32)})

    def predict(self, data_batch: dict) -> list:
        """Data samples with ``pred_instances`` for one batch of the test dataloader."""
        data = self.model.data_preprocessor(data_batch, False)
        inputs, samples = data['inputs'], data['data_samples']
        parts = group_head_outputs(self.output_names, self._run(inputs))
        metas = [sample.metainfo for sample in samples]
        with torch.no_grad():
            results = self.model.bbox_head.predict_by_feat(*parts, batch_img_metas=metas,
                                                           rescale=True)
        return self.model.add_pred_to_datasample(samples, results)


def evaluate_onnx_detector(config, path: str | os.PathLike, *, threads: int | None = None,
                           cfg_options: dict | None = None,
                           log: Log | None = None) -> dict:
    """Evaluate an exported detector on the config's test set (``test_dataloader`` and
    ``test_evaluator``, e.g. COCO bbox mAP), as ``tools/test.py`` does in PyTorch.

    Args:
        config: The detector config the graph was exported from (path, name or Config).
        path: The ``.onnx`` file of the whole detector.
        threads: onnxruntime intra-op threads.
        cfg_options: Overrides merged into the config (e.g. the dataset's path).
        log: Receives a progress line every 50 batches.

    Returns:
        The evaluator's metrics (e.g. ``{'coco/bbox_mAP': ...}``); the COCO metric also
        logs its table, as in ``tools/test.py``.
    """
    from mmengine.evaluator import Evaluator
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    from mmsfr.apis import init_model

    model = init_model(config, cfg_options=cfg_options)
    cfg = model.cfg
    scope = cfg.get('default_scope', 'mmdet')
    detector = OnnxDetector(model, path, threads)
    with DefaultScope.overwrite_default_scope(scope):  # the dataset's and metric's registry
        loader = Runner.build_dataloader(cfg.test_dataloader)
        evaluator = Evaluator(cfg.test_evaluator)
        evaluator.dataset_meta = getattr(loader.dataset, 'metainfo', None)
        for i, batch in enumerate(loader):
            evaluator.process(data_samples=detector.predict(batch), data_batch=batch)
            if log and (i + 1) % 50 == 0:
                log(f'{i + 1} / {len(loader)} batches')
        return evaluator.evaluate(len(loader.dataset))
