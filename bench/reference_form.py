"""The straightforward PyTorch form of a deploy CondenseNetV2: the speed baseline.

This is how the published converted model computes, written here from its
description (not copied): LGC = ``index_select`` -> BN -> act -> ``nn.Conv2d(groups=G)``
-> channel shuffle; SFR = BN -> act -> input shuffle -> ``nn.Conv2d(groups=G)`` ->
scatter by a dense float 0/1 matrix of ``(G * i / S) x i`` applied with ``matmul`` on
an ``(N, HW, C)`` transpose; hard-swish as four element-wise ops
``x * relu6(x + 3) / 6``; every dense layer returns ``cat([old + sfr, new])``.

:func:`reference_backbone` builds it from an mmsfr deploy backbone, sharing its
weights, so both compute the same function (checked by the benchmarks).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from mmsfr.models.backbones.condensenet import CondenseNetV2
from mmsfr.models.layers import channel_shuffle


class FourOpHardSwish(nn.Module):
    """``x * relu6(x + 3) / 6`` as four separate element-wise ops."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) / 6.0


def _act(act: nn.Module) -> nn.Module:
    return FourOpHardSwish() if isinstance(act, nn.Hardswish) else nn.ReLU()


class ReferenceLGC(nn.Module):
    def __init__(self, lgc: nn.Module) -> None:
        super().__init__()
        self.groups = lgc.groups
        self.register_buffer('index', lgc.index.clone())
        self.norm, self.act = copy.deepcopy(lgc.norm), _act(lgc.act)
        self.conv = copy.deepcopy(lgc.conv)  # nn.Conv2d(groups=G)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.act(self.norm(torch.index_select(x, 1, self.index))))
        return channel_shuffle(x, self.groups)


class ReferenceSFR(nn.Module):
    def __init__(self, sfr: nn.Module) -> None:
        super().__init__()
        self.in_per_group = sfr.in_channels // sfr.groups
        self.norm, self.act = copy.deepcopy(sfr.norm), _act(sfr.act)
        self.conv = copy.deepcopy(sfr.conv)
        scatter = torch.zeros(sfr.index.numel(), sfr.out_channels)
        scatter[torch.arange(sfr.index.numel()), sfr.index] = 1.0
        self.register_buffer('scatter', scatter)  # dense float (G * i / S, i)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(channel_shuffle(self.act(self.norm(x)), self.in_per_group))
        n, c, h, w = x.shape
        x = torch.matmul(x.view(n, c, h * w).transpose(1, 2).contiguous(), self.scatter)
        return x.transpose(1, 2).contiguous().view(n, -1, h, w)


class ReferencePreAct(nn.Module):
    def __init__(self, unit: nn.Module) -> None:
        super().__init__()
        self.norm, self.act = copy.deepcopy(unit.norm), _act(unit.act)
        self.conv = copy.deepcopy(unit.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.norm(x)))


class ReferenceDenseLayer(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.conv_1 = ReferenceLGC(layer.conv_1)
        self.conv_2 = ReferencePreAct(layer.conv_2)
        self.se = copy.deepcopy(layer.se)
        self.sfr = None if layer.sfr is None else ReferenceSFR(layer.sfr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv_2(self.conv_1(x))
        if self.se is not None:
            new = self.se(new)
        if self.sfr is not None:
            x = x + self.sfr(new)
        return torch.cat([x, new], 1)


class ReferenceBackbone(nn.Module):
    """Reference-form twin of a deploy :class:`CondenseNetV2` (same outputs)."""

    def __init__(self, backbone: CondenseNetV2) -> None:
        super().__init__()
        if not backbone.deploy:
            raise ValueError('reference_backbone needs a deploy-form CondenseNetV2')
        self.stem = copy.deepcopy(backbone.stem)
        self.blocks = nn.ModuleList(
            nn.Sequential(*[ReferenceDenseLayer(layer) for layer in block])
            for block in backbone.blocks)
        self.pool = nn.AvgPool2d(2, 2)
        self.norms = copy.deepcopy(backbone.norms)
        self.out_indices = backbone.out_indices

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for b, block in enumerate(self.blocks):
            x = block(self.pool(x) if b else x)
            if b in self.out_indices:
                outs.append(F.relu(self.norms[str(b)](x)) if str(b) in self.norms else x)
        return tuple(outs)


def reference_backbone(backbone: CondenseNetV2) -> ReferenceBackbone:
    """Build the reference-form baseline of a deploy backbone (weights are copied)."""
    return ReferenceBackbone(backbone).eval()


def scatter_bytes(model: nn.Module) -> int:
    """Bytes of the SFR scatter state: dense matrices here, index buffers in mmsfr."""
    total = 0
    for name, buf in model.named_buffers():
        if name.endswith('sfr.scatter') or name.endswith('sfr.index'):
            total += buf.numel() * buf.element_size()
    return total
