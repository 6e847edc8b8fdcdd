"""What a deploy CondenseNetV2 dense layer hands mmsfr's C++ operators.

:func:`dense_plan` collects, for one call, the arguments of the operators of
:mod:`mmsfr.ops` from a layer's modules: their tensors as stored (conv weights in
their ``(out, in / groups, kh, kw)`` layout, each BatchNorm as its four tensors and
eps), the index buffers, the group counts and activation codes. Nothing is derived
from the weights here: the kernels compute every BN scale and shift themselves, on
every call, so a forward always reflects the current parameters and buffers.
:func:`run_plan` makes the calls. This is the one place that knows the operators'
argument layout.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ... import ops
from .fast_path import kernel_tensor, kernel_tensors
from .norm_act import eval_norm
from .se import SqueezeExcitation

__all__ = ['DensePlan', 'activation_code', 'dense_plan', 'run_plan', 'se_arguments']

#: The activations the kernels apply (exact module types) and their codes.
_ACTIVATION_CODES: tuple[tuple[type, int], ...] = ((nn.Identity, 0), (nn.ReLU, 1),
                                                   (nn.Hardswish, 2))


def activation_code(act: nn.Module) -> int | None:
    """The kernels' code of an activation module (0 identity, 1 ReLU, 2 hard-swish), or
    None for an activation they do not implement.

    Example:
        >>> activation_code(nn.Hardswish()), activation_code(nn.Sigmoid())
        (2, None)
    """
    for cls, code in _ACTIVATION_CODES:  # (a loop, not a dict: torch.compile traces it)
        if type(act) is cls:
            return code
    return None


def se_arguments(se: SqueezeExcitation) -> tuple | None:
    """The arguments of :func:`mmsfr.ops.se_` after the buffer, channel count and growth
    (``w1, b1, w2, b2, gate``) for a Linear-form :class:`SqueezeExcitation` with float32
    CPU weights; None for any other (it then runs as PyTorch ops).

    Example:
        >>> se_arguments(SqueezeExcitation(16, reduction=1))[-1]  # sigmoid gate
        0
        >>> se_arguments(SqueezeExcitation(16, with_norm=True)) is None
        True
    """
    if se.with_norm:
        return None
    fc = se._modules['fc']._modules
    squeeze, excite = fc['0']._parameters, fc['2']._parameters
    w1, b1, w2, b2 = squeeze['weight'], squeeze['bias'], excite['weight'], excite['bias']
    if w1 is None or w2 is None or not kernel_tensors(w1, b1, w2, b2):
        return None
    gate = 0 if isinstance(se._modules['gate'], nn.Sigmoid) else 1
    return w1.contiguous(), _contiguous(b1), w2.contiguous(), _contiguous(b2), gate


def _contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` with contiguous memory (itself when it has; None stays None)."""
    return None if t is None else t.contiguous()


class DensePlan(NamedTuple):
    """The operators' arguments for one deploy dense layer, from :func:`dense_plan`.

    Attributes:
        lgc: :func:`mmsfr.ops.lgc_conv_`'s arguments after the buffer and channel
            count: the LGC's index, BN (``[weight, bias, running_mean,
            running_var]``), eps, activation code, 1x1 conv weight and groups, then
            ``conv_2``'s BN, eps, activation code and 3x3 conv weight.
        se: The layer's squeeze-excite module, or None.
        se_args: :func:`mmsfr.ops.se_`'s arguments after the buffer, channel count and
            growth (:func:`se_arguments`); None without an SE or when the SE runs as
            PyTorch ops.
        sfr: :func:`mmsfr.ops.sfr_`'s arguments after the buffer, channel count and
            growth: the SFR's BN, eps, activation code, 1x1 conv weight, groups and
            index; None without an SFR.
    """

    lgc: tuple
    se: SqueezeExcitation | None
    se_args: tuple | None
    sfr: tuple | None


def dense_plan(layer: nn.Module, out: torch.Tensor) -> DensePlan | None:
    """The operators' arguments for ``layer`` (a deploy
    :class:`~mmsfr.models.backbones.condensenet.DenseLayer`) writing into the buffer
    ``out``, or None when the operators do not implement the layer as it is now.

    None when: a part is not in deploy form (or its conv is not 1x1), a norm does not
    normalise as an eval-mode ``BatchNorm2d`` with running statistics (training mode,
    or not a plain BatchNorm: :func:`~mmsfr.models.layers.norm_act.eval_norm`; an
    eval-mode ``SyncBatchNorm`` is one), a tensor or ``out`` is not float32 on the CPU
    (an ``index`` not int64 on the CPU), ``conv_2`` is not a 3x3 / stride 1 / padding 1
    conv, or an activation is not one the kernels implement (:func:`activation_code`).

    Example:
        >>> from mmsfr.models.backbones.condensenet import DenseLayer
        >>> layer = DenseLayer(16, 8, 4, 4, 4, deploy=True).eval()
        >>> plan = dense_plan(layer, torch.empty(1, 24, 5, 5))
        >>> plan.lgc[0] is layer.conv_1.index, plan.lgc[4] is layer.conv_1.conv.weight
        (True, True)
        >>> dense_plan(layer.train(), torch.empty(1, 24, 5, 5)) is None
        True
    """
    if not kernel_tensor(out):
        return None
    # (The modules' dicts directly: this runs for every layer of every forward.)
    mods = layer._modules
    lgc, conv_2, se, sfr = mods['conv_1'], mods['conv_2'], mods.get('se'), mods.get('sfr')
    conv = conv_2._modules['conv']
    if not (lgc.deploy and lgc.kernel_size == 1) or (
            sfr is not None and not (sfr.deploy and sfr.kernel_size == 1)) or (
            conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1)
            or conv.dilation != (1, 1) or conv.groups != lgc.groups):
        return None
    first = _kernel_unit(lgc)
    second = _kernel_unit(conv_2)
    third = None if sfr is None else _kernel_unit(sfr)
    if first is None or second is None or (sfr is not None and third is None):
        return None
    index = lgc._buffers['index']
    if not _kernel_index(index):
        return None
    norm, eps, act, weight = first
    norm_2, eps_2, act_2, conv_weight = second
    lgc_args = (index, norm, eps, act, weight, lgc.groups, norm_2, eps_2, act_2, conv_weight)
    sfr_args = None
    if sfr is not None:
        sfr_index = sfr._buffers['index']
        if not _kernel_index(sfr_index):
            return None
        sfr_args = (*third, sfr.groups, sfr_index)
    return DensePlan(lgc_args, se, None if se is None else se_arguments(se), sfr_args)


def _kernel_unit(part: nn.Module) -> tuple[list[torch.Tensor], float, int, torch.Tensor] | None:
    """``([bn weight, bias, running_mean, running_var], eps, activation code, conv
    weight)`` of a pre-activation unit (BN -> act -> conv) as the kernels take them,
    or None if they cannot (see :func:`dense_plan`).

    This runs for three units of every layer of every forward, so it reads the
    modules' dicts directly and checks each tensor once, by name (a loop over a tuple
    of them measured ~25 % slower)."""
    mods = part._modules
    act = activation_code(mods['act'])
    norm = eval_norm(mods['norm'])
    if act is None or norm is None:
        return None
    weight, bias, mean, var, eps = norm
    conv_weight = mods['conv']._parameters['weight']
    if weight is None or bias is None or conv_weight is None or not (
            kernel_tensor(weight) and kernel_tensor(bias) and kernel_tensor(mean)
            and kernel_tensor(var) and kernel_tensor(conv_weight)):
        return None
    # (No copy of a contiguous tensor; a conv weight of a channels_last model is not.)
    return ([weight.contiguous(), bias.contiguous(), mean.contiguous(), var.contiguous()],
            eps, act, conv_weight.contiguous())


def _kernel_index(t: torch.Tensor) -> bool:
    """Whether ``t`` is an int64 CPU tensor (an index the kernels take)."""
    return t.dtype is torch.int64 and t.is_cpu


def run_plan(plan: DensePlan, out: torch.Tensor, channels: int, growth: int) -> None:
    """Run one dense layer's operators on the buffer ``out``: the layer reads its first
    ``channels`` channels, writes ``growth`` new ones after them and reactivates the old
    ones (see :meth:`~mmsfr.models.backbones.condensenet.DenseLayer.write_features_`)."""
    ops.lgc_conv_(out, channels, *plan.lgc)
    if plan.se is not None:
        if plan.se_args is None:
            new = out[:, channels:channels + growth]
            new.mul_(plan.se.excitation(new))
        else:
            ops.se_(out, channels, growth, *plan.se_args)
    if plan.sfr is not None:
        ops.sfr_(out, channels, growth, *plan.sfr)
