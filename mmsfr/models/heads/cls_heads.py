"""Classification heads of the mmsfr classifiers (mmpretrain components)."""
from __future__ import annotations

import torch
from mmengine.registry import MODELS
from mmpretrain.models.heads import ClsHead
from torch import nn

from ..layers import CondensingLinear, FastLinear, SqueezeExcitation


@MODELS.register_module()
class CondenseNetV2ClsHead(ClsHead):
    """CondenseNetV2's classifier tail after pooling: SE -> Linear -> HS -> Linear.

    The backbone's last-block norm (BN + ReLU) and a ``GlobalAveragePooling`` neck
    come before it, as in the reference (BN -> ReLU -> pool -> SE(16) -> fc -> HS ->
    classifier).

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the pooled features.
        mid_channels: Width of the hidden layer (``fc_channel``: 828 for A, else 1024).
        se_reduction: Reduction of the SE on the pooled vector.
        **kwargs: Passed to mmpretrain's ``ClsHead`` (``loss``, ``topk``, ``init_cfg``).

    Example:
        >>> head = CondenseNetV2ClsHead(num_classes=10, in_channels=64, mid_channels=32)
        >>> head((torch.rand(2, 64),)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, in_channels: int, mid_channels: int,
                 se_reduction: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be positive')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.se = SqueezeExcitation(in_channels, reduction=se_reduction)
        self.fc = FastLinear(in_channels, mid_channels)
        self.act = nn.Hardswish()
        self.classifier = FastLinear(mid_channels, num_classes)

    def pre_logits(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.act(self.fc(self.se(feats[-1])))

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.classifier(self.pre_logits(feats))


@MODELS.register_module()
class CondenseNetClsHead(ClsHead):
    """CondenseNet's classifier: one Linear whose deploy form keeps its strongest inputs.

    The reference CondenseNet condenses the classifier on conversion to the
    ``keep_ratio`` fraction of input features with the largest L1 weight norm
    (:class:`~mmsfr.models.layers.CondensingLinear`).

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the pooled features.
        keep_ratio: Fraction of inputs the deploy form keeps (1.0 = no condensing).
        deploy: Build the deploy form (``fc.index`` + smaller ``fc.linear``).
        **kwargs: Passed to mmpretrain's ``ClsHead``.

    Example:
        >>> head = CondenseNetClsHead(num_classes=10, in_channels=64)
        >>> head((torch.rand(2, 64),)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, in_channels: int, keep_ratio: float = 0.5,
                 deploy: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be positive')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.fc = CondensingLinear(in_channels, num_classes, keep_ratio, deploy=deploy)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.fc(feats[-1])
