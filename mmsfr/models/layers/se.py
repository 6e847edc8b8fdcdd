"""Squeeze-and-excitation, in the forms CondenseNetV2 and ShuffleNetV2+ use."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm_act import DEFAULT_NORM_CFG, build_norm
from .fast_path import inference_fast_path
from .linear import FastLinear, streamed_linear


class SqueezeExcitation(nn.Module):
    """Channel attention ``x * gate(W2 act(W1 pool(x))))``.

    One implementation serves every SE of the package: CondenseNetV2's (Linear
    layers without bias, ReLU, sigmoid; reduction 1 inside dense layers and 16 in the
    classifier tail) and ShuffleNetV2+'s (1x1 convs, BatchNorm after the squeeze,
    hard-sigmoid). The excitation weights are stored as ``fc.0`` / ``fc.2`` (Linear
    layers, CondenseNetV2) or ``fc.0`` / ``fc.1`` (norm) / ``fc.3`` (1x1 convs).

    Args:
        channels: Input and output channels.
        reduction: Squeeze ratio; the hidden width is ``channels // reduction`` (floored).
        gate: ``'sigmoid'`` or ``'hsigmoid'`` (``relu6(x + 3) / 6``).
        with_norm: Put a BatchNorm after the squeeze (ShuffleNetV2+) and use 1x1 convs.
        bias: Whether the squeeze/excite layers have biases.
        norm_cfg: Config of that norm (:func:`~.condense.build_norm`); the Linear
            form has no norm.

    Example:
        >>> se = SqueezeExcitation(32, reduction=16)
        >>> se(torch.rand(2, 32, 7, 7)).shape
        torch.Size([2, 32, 7, 7])
        >>> se(torch.rand(2, 32)).shape  # a pooled vector
        torch.Size([2, 32])
    """

    GATES = ('sigmoid', 'hsigmoid')

    def __init__(self, channels: int, reduction: int = 16, gate: str = 'sigmoid',
                 with_norm: bool = False, bias: bool = False,
                 norm_cfg: dict = DEFAULT_NORM_CFG) -> None:
        super().__init__()
        if gate not in self.GATES:
            raise ValueError(f'SqueezeExcitation: gate={gate!r}; choose one of {self.GATES}')
        hidden = channels // reduction  # floor, as the reference (1176 // 16 = 73)
        if hidden < 1:
            raise ValueError(
                f'SqueezeExcitation: reduction {reduction} leaves no hidden unit for '
                f'{channels} channels')
        self.with_norm = with_norm
        if with_norm:
            self.fc = nn.Sequential(
                nn.Conv2d(channels, hidden, 1, bias=bias),
                build_norm(norm_cfg, hidden, type(self).__name__),
                nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1, bias=bias))
        else:
            self.fc = nn.Sequential(
                FastLinear(channels, hidden, bias=bias), nn.ReLU(inplace=True),
                FastLinear(hidden, channels, bias=bias))
        self.gate = nn.Sigmoid() if gate == 'sigmoid' else nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excitation(x)

    def excitation(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate ``forward`` multiplies ``x`` by, shaped to broadcast
        against ``x`` ((N, C, 1, 1) or (N, C)); lets a caller write the product where
        it wants it (``torch.mul(x, se.excitation(x), out=...)``)."""
        pooled = x if x.dim() == 2 else x.mean((2, 3))
        if self.with_norm:
            scale = self.gate(self.fc(pooled[:, :, None, None]))
        elif inference_fast_path():
            scale = self._excite_(pooled)
        else:
            scale = self.gate(self.fc(pooled))
        return scale.reshape(*scale.shape[:2], *([1] * (x.dim() - 2)))

    def _excite_(self, pooled: torch.Tensor) -> torch.Tensor:
        """``gate(fc(pooled))`` of the Linear form as functional calls, activations in
        place (inference only: at one SE per dense layer, the calls of its five small
        modules cost as much as their arithmetic)."""
        squeeze, _, excite = self.fc
        hidden = torch.relu_(streamed_linear(pooled, squeeze.weight, squeeze.bias))
        scale = streamed_linear(hidden, excite.weight, excite.bias)
        if isinstance(self.gate, nn.Sigmoid):
            return torch.sigmoid_(scale)
        return F.hardsigmoid(scale, inplace=True)
