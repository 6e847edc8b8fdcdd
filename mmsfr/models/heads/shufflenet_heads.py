"""Classification heads of the ShuffleNetV2 / V2+ classifiers (mmpretrain components).

Both follow a ``GlobalAveragePooling`` neck and take the pooled ``conv_last`` features
(backbone ``out_indices=(4,)``).
"""
from __future__ import annotations

import torch
from mmengine.registry import MODELS
from mmpretrain.models.heads import ClsHead
from torch import nn

from ..layers import FastLinear, SqueezeExcitation


@MODELS.register_module()
class ShuffleNetV2ClsHead(ClsHead):
    """ShuffleNetV2's classifier: [dropout ->] Linear, with or without bias.

    mmpretrain's ``LinearClsHead`` always has a bias, megvii's classifier has none; this
    head has the same ``fc`` key, so torchvision-converted weights (with bias) load
    into either.

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the pooled features (1024, or 2048 for 2.0x).
        bias: Whether the Linear layer has a bias (megvii: False, torchvision: True).
        dropout: Dropout ratio before the Linear layer (megvii 2.0x: 0.2).
        init_cfg: Init config; by default N(0, 0.01) for the Linear weight.
        **kwargs: Passed to mmpretrain's ``ClsHead`` (``loss``, ``topk``, ...).

    Example:
        >>> head = ShuffleNetV2ClsHead(num_classes=10, in_channels=64, bias=False)
        >>> head((torch.rand(2, 64),)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, in_channels: int, bias: bool = False,
                 dropout: float = 0.0,
                 init_cfg: dict | None = dict(type='Normal', layer='Linear', std=0.01),
                 **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be positive')
        if not 0 <= dropout < 1:
            raise ValueError(f'dropout={dropout} must be in [0, 1)')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = FastLinear(in_channels, num_classes, bias=bias)

    def pre_logits(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The pooled features of the last level (dropout applied in ``forward``)."""
        return feats[-1]

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Return the logits."""
        return self.fc(self.dropout(self.pre_logits(feats)))


@MODELS.register_module()
class ShuffleNetV2PlusClsHead(ClsHead):
    """ShuffleNetV2+'s tail after pooling: SE -> Linear -> HS -> dropout -> Linear.

    As megvii's: the SE on the pooled map has 1x1 convs, BN after the squeeze
    (reduction 4) and a hard-sigmoid gate; both Linear layers have no bias.

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the pooled features (1280).
        mid_channels: Width of the hidden Linear layer (1280).
        dropout: Dropout ratio before the classifier (0.2).
        init_cfg: Init config; by default N(0, 0.01) for Linear and the SE convs.
        **kwargs: Passed to mmpretrain's ``ClsHead``.

    Example:
        >>> head = ShuffleNetV2PlusClsHead(num_classes=10, in_channels=64,
        ...                                mid_channels=32).eval()
        >>> head((torch.rand(2, 64),)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, in_channels: int = 1280, mid_channels: int = 1280,
                 dropout: float = 0.2,
                 init_cfg: dict | None = dict(type='Normal', layer=['Linear', 'Conv2d'],
                                              std=0.01),
                 **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be positive')
        if not 0 <= dropout < 1:
            raise ValueError(f'dropout={dropout} must be in [0, 1)')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.se = SqueezeExcitation(in_channels, reduction=4, gate='hsigmoid',
                                    with_norm=True)
        self.fc = FastLinear(in_channels, mid_channels, bias=False)
        self.act = nn.Hardswish()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = FastLinear(mid_channels, num_classes, bias=False)

    def pre_logits(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """SE -> Linear -> HS on the pooled features of the last level."""
        return self.act(self.fc(self.se(feats[-1])))

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Return the logits."""
        return self.classifier(self.dropout(self.pre_logits(feats)))
