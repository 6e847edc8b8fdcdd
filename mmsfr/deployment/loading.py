"""What is exported: a config + checkpoint -> :class:`ExportModule`, in its deploy form.

A classifier is exported as ``image -> logits``; a single-stage detector as its
tensors (backbone, neck, head: per-level class scores and box regressions, without
post-processing); a two-stage detector as its first stage (backbone, neck, RPN head);
a backbone (of a classifier or detector with ``backbone_only``) as ``image ->
features``, one named output ``feat<i>`` per level ``i`` of its ``out_indices``. The
input is the network input, i.e. the image after the config's ``data_preprocessor``
(mean/std, channel order): that step is not part of the graph.

Only the deploy form is exported: a model holding a train-time (masked) LGC/SFR layer
is refused (:func:`check_deploy_form`); convert it with ``tools/convert_to_deploy.py``.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
from torch import nn

from mmsfr.checkpoint import read_state_dict
from mmsfr.models.deploy import pending_deploy
from mmsfr.models.layers import CondensingConv, CondensingLinear

from .verify import eval_mode

__all__ = ['ExportModule', 'TrainTimeModelError', 'check_deploy_form', 'load_export_module']

Log = Callable[[str], None]


def _silent(_: str) -> None:
    pass


class TrainTimeModelError(ValueError):
    """A model (or checkpoint) in its train-time (masked) form was given for export."""


def _is_detector(model: nn.Module) -> bool:
    try:
        from mmdet.models.detectors import BaseDetector
    except ImportError:  # pragma: no cover - mmdet is a dependency of mmsfr
        return False
    return isinstance(model, BaseDetector)


def _is_classifier(model: nn.Module) -> bool:
    from mmpretrain.models.classifiers import BaseClassifier
    return isinstance(model, BaseClassifier)


#: Output names of a dense head's per-level outputs, by position in its forward's tuple.
HEAD_PARTS = ('cls_score', 'bbox_pred', 'score_factor')


def _head_levels(head: nn.Module) -> int:
    """Levels a dense head predicts on (its prior generator's)."""
    return head.prior_generator.num_levels


class ExportModule(nn.Module):
    """The exported network: ``image -> logits``, ``image -> backbone features`` or a
    detector's tensors.

    Args:
        model: An mmpretrain classifier (exported whole, ``mode='tensor'``: logits, no
            softmax), an mmdet detector or a backbone.
        backbone_only: Export only the backbone of a classifier or detector.

    What a detector exports (without ``backbone_only``):

    * a single-stage detector (RetinaNet, FCOS, ...), ``target='detector'``: backbone,
      neck and head (mmdet's ``mode='tensor'``), outputs ``cls_score<l>``,
      ``bbox_pred<l>`` (and ``score_factor<l>``) per level ``l``; the post-processing
      (``bbox_head.predict_by_feat``: decoding, NMS) is not in the graph;
    * a two-stage detector (Faster R-CNN), ``target='first stage'``: backbone, neck
      and RPN head, outputs ``feat<l>`` (the neck's features), ``rpn_cls_score<l>``
      and ``rpn_bbox_pred<l>``. Proposals, RoIAlign and the RoI head need the image
      metas (mmdet's tensor mode runs them with data samples) and run after the graph.

    Attributes:
        target: ``'classifier'``, ``'backbone'``, ``'detector'`` or ``'first stage'``.
        output_names (tuple[str]): ``('logits',)`` for a classifier; ``feat<i>`` per
            level ``i`` of the backbone's ``out_indices`` (``feat0``, ``feat1``, ...
            for a backbone without ``out_indices``); a detector's as above.

    Example:
        >>> from mmsfr.models import ShuffleNetV2
        >>> module = ExportModule(ShuffleNetV2(arch='0.5x', out_indices=(1, 2, 3)))
        >>> module.output_names
        ('feat1', 'feat2', 'feat3')
        >>> [tuple(f.shape) for f in module.eval()(torch.rand(1, 3, 64, 64))]
        [(1, 48, 8, 8), (1, 96, 4, 4), (1, 192, 2, 2)]
    """

    def __init__(self, model: nn.Module, backbone_only: bool = False) -> None:
        super().__init__()
        self.source = type(model).__name__  # the model the config builds
        self.training = model.training
        detector = _is_detector(model)
        if backbone_only and hasattr(model, 'backbone'):
            self.net, self.target = model.backbone, 'backbone'
        elif detector and getattr(model, 'with_rpn', False):
            self.net, self.target = model, 'first stage'
        elif detector and hasattr(model, 'bbox_head'):
            self.net, self.target = model, 'detector'
        elif detector:
            raise ValueError(f'{self.source} is neither a single-stage detector (bbox_head) '
                             'nor a two-stage one with an RPN; export its backbone with '
                             'backbone_only=True (--backbone-only)')
        elif _is_classifier(model):
            self.net, self.target = model, 'classifier'
        else:
            self.net, self.target = model, 'backbone'
        if self.target == 'classifier':
            self.output_names: tuple[str, ...] = ('logits', )
            what = f'{self.source} ({type(model.backbone).__name__} backbone)'
        elif self.target == 'detector':
            self.output_names = self._head_names(model.bbox_head, '')
            what = f'{self.source} ({type(model.backbone).__name__} backbone)'
        elif self.target == 'first stage':
            levels = _head_levels(model.rpn_head)
            self.output_names = (tuple(f'feat{i}' for i in range(levels))
                                 + self._head_names(model.rpn_head, 'rpn_'))
            what = f'{self.source} first stage ({type(model.backbone).__name__} backbone)'
        else:
            indices = getattr(self.net, 'out_indices', None)
            self.output_names = tuple(f'feat{i}' for i in indices) if indices else ()
            owner = '' if self.net is model else f' of {self.source}'
            what = f'{type(self.net).__name__} backbone{owner}'
        #: E.g. ``'CondenseNetV2 backbone of RetinaNet: image -> feat2, feat3, feat4'``.
        names = self.output_names
        shown = ', '.join(names if len(names) <= 4 else (*names[:3], f'... ({len(names)})'))
        self.description = f"{what}: image -> {shown or 'features'}"
        #: How the input is prepared (set by :func:`load_export_module` from the config).
        self.preprocessing = ''

    @staticmethod
    def _head_names(head: nn.Module, prefix: str) -> tuple[str, ...]:
        """``<prefix><part><level>`` for every output of a dense head, in its order."""
        # How many parts the head's forward returns, in eval mode (a BatchNorm in the
        # head must not take the probe into its running statistics).
        with torch.no_grad(), eval_mode(head):
            parts = len(head.forward(_head_probe(head)))
        if parts > len(HEAD_PARTS):
            raise ValueError(f'{type(head).__name__} returns {parts} kinds of outputs; '
                             f'exported dense heads return at most {len(HEAD_PARTS)} '
                             f'({", ".join(HEAD_PARTS)})')
        levels = _head_levels(head)
        return tuple(f'{prefix}{part}{i}' for part in HEAD_PARTS[:parts] for i in range(levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.target == 'classifier':
            out = self.net(x, mode='tensor')
        elif self.target == 'detector':
            out = [t for level_outputs in self.net._forward(x) for t in level_outputs]
        elif self.target == 'first stage':
            feats = self.net.extract_feat(x)
            out = [*feats, *(t for part in self.net.rpn_head(feats) for t in part)]
        else:
            out = self.net(x)
        return out if isinstance(out, torch.Tensor) else tuple(out)


def _head_probe(head: nn.Module) -> tuple[torch.Tensor, ...]:
    """Tiny per-level features a dense head's forward takes (to count its outputs)."""
    param = next(head.parameters())
    return tuple(torch.zeros(1, head.in_channels, 2, 2, dtype=param.dtype, device=param.device)
                 for _ in range(_head_levels(head)))


def check_deploy_form(model: nn.Module) -> None:
    """Refuse a model that holds an LGC/SFR layer (or pruned Linear) in train-time form.

    The parts refused are what :func:`~mmsfr.models.deploy.pending_deploy` names with
    ``network_changes_only``: masked LGC/SFR layers and the unpruned condensing
    classifier, whose train-time form is another network (dense masked convs). Parts
    whose train-time form computes the same function with standard operators, such as
    ShuffleNet's unfused conv -> BN pairs, export as they are.

    Args:
        model: The model, or an :class:`ExportModule` (layer names are then given
            relative to the wrapped model, as in its checkpoint).

    Raises:
        TrainTimeModelError: naming the first such layer and how to convert.

    Example:
        >>> from mmsfr.models import CondenseNetV2
        >>> check_deploy_form(CondenseNetV2(arch='a', deploy=True))
        >>> check_deploy_form(CondenseNetV2(arch='a'))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mmsfr.deployment.loading.TrainTimeModelError: blocks.0.0.conv_1 (LearnedGroupConv) ...
    """
    root = model.net if isinstance(model, ExportModule) else model
    pending = set(pending_deploy(root, network_changes_only=True))
    if not pending:
        return
    for name, module in root.named_modules():  # in the order of pending_deploy
        if name in pending:
            form = 'masked' if isinstance(module, CondensingConv) else 'unpruned'
            raise TrainTimeModelError(
                f'{name or "the model"} ({type(module).__name__}) is in its train-time '
                f'({form}) form; only the deploy form is exported. Convert the checkpoint '
                'first with tools/convert_to_deploy.py CONFIG CHECKPOINT DEPLOY_CHECKPOINT, '
                'then export DEPLOY_CHECKPOINT with the matching *_deploy_* config')


def _keys(keys: Sequence[str], limit: int = 3) -> str:
    more = f', ... ({len(keys)} in all)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def _load_backbone(model: nn.Module, state_dict: dict, checkpoint, log: Log) -> None:
    """A detector's backbone from the ``backbone.*`` weights of a detector or classifier
    checkpoint, or from a bare backbone state_dict."""
    prefix = 'backbone.'
    if any(k.startswith(prefix) for k in state_dict):
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    missing, unexpected = model.backbone.load_state_dict(state_dict, strict=False)
    if missing:
        raise ValueError(
            f'{checkpoint}: {len(missing)} weights of the {type(model.backbone).__name__} '
            f'backbone are not in the checkpoint ({_keys(missing)}); use a checkpoint of '
            'this backbone')
    if unexpected:
        log(f'note: ignored {len(unexpected)} checkpoint keys the backbone does not have '
            f'({_keys(unexpected)})')


def load_export_module(config, checkpoint: str | os.PathLike | None, *,
                       backbone_only: bool = False, cfg_options: dict | None = None,
                       log: Log | None = None) -> ExportModule:
    """Build the model of a config, load a checkpoint and wrap it for export.

    The model comes from :func:`mmsfr.apis.init_model`, which loads the whole
    checkpoint strictly (every key must match). A detector's backbone exported alone
    (``backbone_only``) loads only the backbone: the ``backbone.*`` weights of a
    detector or classifier checkpoint (or a bare backbone state_dict); every backbone
    weight must be present, extra backbone keys (e.g. a classifier's ``conv_last``) are
    ignored and reported through ``log``.

    Args:
        config: mmpretrain classifier or mmdet detector config: a path, the name of a
            config shipped with mmsfr, or an mmengine ``Config``.
        checkpoint: Checkpoint path or URL; None keeps the built (random) weights.
        backbone_only: Export only the backbone of a classifier or detector.
        cfg_options: Overrides merged into the config.
        log: Receives notes (ignored keys).

    Returns:
        The :class:`ExportModule`, in eval mode.

    Raises:
        ValueError: the checkpoint does not fit the model (names the keys, or, from
            the model, the arch / deploy-form mismatch).
        FileNotFoundError: missing config or checkpoint.

    Example:
        >>> module = load_export_module('condensenetv2-a_deploy_in1k', None)
        >>> module.description
        'ImageClassifier (CondenseNetV2 backbone): image -> logits'
        >>> module.preprocessing.split(' (')[0]
        'RGB image in 0-255, minus mean [123.675, 116.28, 103.53], divided by std [58.395, 57.12, 57.375]'
    """
    from mmsfr.apis import init_model, load_checkpoint

    log = log or _silent
    model = init_model(config, cfg_options=cfg_options)
    if checkpoint is not None and backbone_only and _is_detector(model):
        _load_backbone(model, read_state_dict(checkpoint, allow_url=True), checkpoint, log)
    elif checkpoint is not None:
        load_checkpoint(model, checkpoint, config)
    module = ExportModule(model, backbone_only=backbone_only).eval()
    module.preprocessing = _preprocessing(model.cfg)
    return module


def _preprocessing(cfg) -> str:
    """How the config's data_preprocessor prepares the network input, in words."""
    pre = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    mean, std = pre.get('mean'), pre.get('std')
    if mean is None or std is None:
        return 'the image as the config feeds it (no mean/std in its data_preprocessor)'
    rgb = pre.get('to_rgb', pre.get('bgr_to_rgb', False))
    fmt = lambda v: '[' + ', '.join(f'{x:g}' for x in v) + ']'  # noqa: E731
    return (f"{'RGB' if rgb else 'BGR'} image in 0-255, minus mean {fmt(mean)}, divided by "
            f'std {fmt(std)} (the config\'s data_preprocessor; not part of the graph)')
