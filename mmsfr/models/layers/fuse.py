"""Folding an eval-mode BatchNorm into the convolution before it (deploy forms).

``conv -> BN`` equals, with the BN's running statistics, a single conv whose filter
``o`` is scaled by ``gamma_o / sqrt(var_o + eps)`` and whose bias is the BN's shift.
Deploy forms of post-activation networks (the ShuffleNet units) fold every such pair:
one op and one pass over the feature map less per conv. Pre-activation layers (BN ->
act -> conv, the CondenseNet layers) cannot fold their BN into the conv behind the
activation; they keep it.
"""
from __future__ import annotations

import torch
from mmcv.cnn import ConvModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .norm_act import bn_affine, eval_affine, is_plain_batchnorm

__all__ = ['fold_affine', 'fold_batchnorm', 'fold_state_dict_norms', 'fuse_conv_module']

#: The layer order of a ConvModule whose norm can be folded into its conv.
FUSABLE_ORDER = ('conv', 'norm', 'act')


def fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor | None,
                   norm: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the conv equal to ``norm(conv(x))`` in eval mode.

    Args:
        weight: Conv weight ``(C_out, C_in / groups, kh, kw)``.
        bias: Conv bias ``(C_out,)`` or ``None``.
        norm: The BatchNorm after the conv (``C_out`` channels, running statistics).

    Returns:
        ``(weight, bias)``, new tensors.

    Example:
        >>> conv, bn = nn.Conv2d(4, 6, 3, bias=False), nn.BatchNorm2d(6).eval()
        >>> _ = nn.init.uniform_(bn.running_var, 0.5, 2.0)
        >>> w, b = fold_batchnorm(conv.weight, None, bn)
        >>> x = torch.rand(1, 4, 5, 5)
        >>> torch.allclose(nn.functional.conv2d(x, w, b), bn(conv(x)), atol=1e-6)
        True
    """
    if norm.running_var is None:
        raise ValueError(f'fold_batchnorm: {norm} keeps no running statistics '
                         '(track_running_stats=False); only eval-mode statistics fold')
    if weight.shape[0] != norm.num_features:
        raise ValueError(f'fold_batchnorm: a conv of {weight.shape[0]} output channels '
                         f'cannot fold a BatchNorm of {norm.num_features} channels')
    return fold_affine(weight, bias, *eval_affine(norm))


def fold_affine(weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor,
                shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the conv equal to ``conv(x) * scale + shift`` (per output
    channel), e.g. with ``(scale, shift)`` from
    :func:`~mmsfr.models.layers.condense.bn_affine`.

    Example:
        >>> w, b = fold_affine(torch.ones(2, 1, 1, 1), None, torch.tensor([2., 3.]),
        ...                    torch.tensor([1., 0.]))
        >>> w.flatten().tolist(), b.tolist()
        ([2.0, 3.0], [1.0, 0.0])
    """
    with torch.no_grad():
        folded = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
        if bias is not None:
            shift = shift + bias * scale
    return folded.detach().clone(), shift.detach().clone()


#: The BatchNorm entries of a ``ConvModule`` in a state_dict (``bn.<name>``).
NORM_KEYS = ('weight', 'bias', 'running_mean', 'running_var')


def fold_state_dict_norms(state_dict: dict[str, torch.Tensor], prefix: str,
                          eps: float = 1e-5) -> bool:
    """Fold the BatchNorm of the ``ConvModule`` saved under ``prefix`` into its conv,
    in ``state_dict`` (``{prefix}bn.*`` are replaced by ``{prefix}conv.bias``).

    Returns:
        Whether there was a BatchNorm to fold (False leaves ``state_dict`` unchanged).

    Example:
        >>> cm = ConvModule(3, 4, 1, norm_cfg=dict(type='BN')).eval()
        >>> sd = {f'm.{k}': v for k, v in cm.state_dict().items()}
        >>> fold_state_dict_norms(sd, 'm.'), sorted(sd)
        (True, ['m.conv.bias', 'm.conv.weight'])
    """
    norm = f'{prefix}bn.'
    if any(norm + k not in state_dict for k in NORM_KEYS) or f'{prefix}conv.bias' in state_dict:
        return False
    stats = [state_dict.pop(norm + k) for k in NORM_KEYS]
    state_dict.pop(norm + 'num_batches_tracked', None)
    weight = state_dict[f'{prefix}conv.weight']
    weight, bias = fold_affine(weight, None, *bn_affine(*stats, eps))
    state_dict[f'{prefix}conv.weight'], state_dict[f'{prefix}conv.bias'] = weight, bias
    return True


def fuse_conv_module(module: ConvModule) -> ConvModule:
    """A norm-free ``ConvModule`` equal in eval mode to ``module`` (conv -> BN -> act).

    The result keeps the conv geometry, the activation, the device and dtype and
    whether the conv is trained (``requires_grad``); its conv gets a bias. Any
    BatchNorm with running statistics that normalises as ``BatchNorm2d`` in eval mode
    folds (``SyncBatchNorm`` too, :func:`~.norm_act.is_plain_batchnorm`). A module
    without one, or with another layer order, is returned unchanged (a GroupNorm or a
    norm before the conv has nothing to fold into).

    Example:
        >>> cm = ConvModule(8, 16, 3, padding=1, norm_cfg=dict(type='BN')).eval()
        >>> fused = fuse_conv_module(cm)
        >>> fused.with_norm, fused.conv.bias is not None
        (False, True)
        >>> x = torch.rand(1, 8, 6, 6)
        >>> torch.allclose(fused(x), cm(x), atol=1e-6)
        True
    """
    if not (module.with_norm and is_plain_batchnorm(module.norm)
            and tuple(module.order) == FUSABLE_ORDER):
        return module
    conv = module.conv
    if type(conv) is not nn.Conv2d or module.with_explicit_padding:
        return module
    fused = ConvModule(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                       conv.padding, conv.dilation, conv.groups, bias=True,
                       norm_cfg=None, act_cfg=module.act_cfg, inplace=module.inplace,
                       padding_mode=conv.padding_mode)
    fused.to(device=conv.weight.device, dtype=conv.weight.dtype)
    weight, bias = fold_batchnorm(conv.weight, conv.bias, module.norm)
    fused.conv.weight.data.copy_(weight)
    fused.conv.bias.data.copy_(bias)
    fused.conv.requires_grad_(conv.weight.requires_grad)  # a frozen conv stays frozen
    return fused.train(module.training)
