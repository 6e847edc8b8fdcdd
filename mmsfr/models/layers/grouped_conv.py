"""Grouped convolutions computed the way a CPU runs them fastest, exactly.

Condensed networks are made of grouped convolutions with few channels per group,
the shapes CPU convolution libraries handle worst: a 1x1 conv with ``groups=8`` falls
back to a per-group loop of small im2col GEMMs, and a 3x3 conv with four inputs and
one output per group runs at a fraction of the speed of a depthwise conv of the same
size. The functions here compute the same sums with better-suited kernels:

* :func:`grouped_pointwise`: a 1x1 grouped conv as one batched GEMM
  (``(G, out/G, in/G) @ (N, G, in/G, H*W)``). Channel permutations around it are
  folded into the GEMM's strides: ``strided_input`` reads group ``g`` from channels
  ``g, g + G, ...`` (the SFR input shuffle) and ``shuffle_output`` writes filter
  ``k`` of group ``g`` to channel ``k * G + g`` (the LGC output shuffle).
* :func:`grouped_conv2d`: a KxK grouped conv; when each group has at most
  ``DEPTHWISE_MAX_OUT`` outputs it is computed as depthwise convs (one per output of a
  group) followed by a sum over each group's inputs; with more outputs per group,
  inference runs oneDNN's channels-last (NHWC) grouped kernel, which is faster than
  its NCHW one for these shapes even with the layout changes in and out. An ONNX
  export takes the depthwise route up to ``EXPORT_DEPTHWISE_MAX_OUT`` outputs per
  group (onnxruntime's thresholds differ from oneDNN's).

Both give the result of ``nn.functional.conv2d`` up to float summation order
(tested to 1e-5 relative) and support autograd.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .fast_path import inference_fast_path

__all__ = ['DEPTHWISE_MAX_OUT', 'EXPORT_DEPTHWISE_MAX_OUT', 'gemm_start', 'grouped_conv2d',
           'grouped_gemm_into', 'grouped_pointwise']

#: Largest outputs-per-group for which :func:`grouped_conv2d` uses depthwise convs
#: (measured on x86 CPUs: faster for 1 and 2 outputs per group, slower from 4).
DEPTHWISE_MAX_OUT = 2

#: The same limit for an ONNX export (:func:`mmsfr.deployment.export_dynamic`).
#: onnxruntime's CPU ``Conv`` runs grouped convs with 2 to 8 outputs per group (the
#: CondenseNetV2 3x3 convs before the last block) in a generic per-group im2col loop,
#: depthwise convs in its fast NCHWc kernels, and groups of 16 outputs in its grouped
#: NCHWc kernel; 4 was the fastest limit for whole CondenseNetV2 graphs (onnxruntime
#: 1.32, AVX-512). ``bench/onnx_latency.py`` times CondenseNetV2-C exported with it and
#: with grouped ``Conv`` nodes everywhere.
EXPORT_DEPTHWISE_MAX_OUT = 4


def grouped_pointwise(x: torch.Tensor, weight: torch.Tensor, groups: int, *,
                      strided_input: bool = False, shuffle_output: bool = False,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """1x1 grouped convolution as a batched matrix product.

    Args:
        x: Input (N, C_in, H, W).
        weight: (C_out, C_in / groups, 1, 1) or (C_out, C_in / groups); rows
            ``g * C_out / groups ...`` belong to group ``g``.
        groups: Number of groups G.
        strided_input: Group ``g`` reads channels ``g, g + G, g + 2G, ...`` instead of
            the block ``g * C_in / G ...`` (equal to shuffling the input first).
        shuffle_output: Output ``k`` of group ``g`` goes to channel ``k * G + g``
            instead of ``g * C_out / G + k`` (equal to shuffling the output after).
        bias: Optional (C_out,) added to output channel ``c`` (in the returned order);
            in the fast path it is the GEMM's accumulator start (no extra pass).

    Returns:
        (N, C_out, H, W).

    Example:
        >>> x, w = torch.rand(2, 8, 5, 5), torch.rand(12, 2, 1, 1)
        >>> y = grouped_pointwise(x, w, 4)
        >>> torch.allclose(y, F.conv2d(x, w, groups=4), atol=1e-6)
        True
    """
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    if c_in % groups or c_out % groups or weight.shape[1] * groups != c_in:
        raise ValueError(f'grouped_pointwise: weight {tuple(weight.shape)} with groups={groups} '
                         f'does not fit {c_in} input channels')
    mats = weight.reshape(groups, c_out // groups, c_in // groups)
    if inference_fast_path():
        start = None if bias is None else gemm_start(bias, groups, shuffle_output)
        return grouped_gemm_into(x.new_empty(n, c_out, h, w), mats, x,
                                 strided_input=strided_input,
                                 shuffle_output=shuffle_output, start=start)
    if strided_input:
        cols = x.reshape(n, c_in // groups, groups, h * w).transpose(1, 2)
    else:
        cols = x.reshape(n, groups, c_in // groups, h * w)
    y = torch.matmul(mats, cols)  # (N, G, C_out / G, H * W)
    if shuffle_output:
        y = y.transpose(1, 2)
    y = y.reshape(n, c_out, h, w)
    return y if bias is None else y + bias.view(-1, 1, 1)


def gemm_start(bias: torch.Tensor, groups: int, shuffle_output: bool) -> torch.Tensor:
    """A per-output-channel bias in the accumulator layout of :func:`grouped_gemm_into`
    (``(G, C_out / G, 1)``)."""
    per_group = bias.shape[0] // groups
    grid = bias.view(per_group, groups).t() if shuffle_output else bias.view(groups, per_group)
    return grid[..., None]


def grouped_gemm_into(out: torch.Tensor, mats: torch.Tensor, x: torch.Tensor, *,
                      strided_input: bool = False, shuffle_output: bool = False,
                      start: torch.Tensor | None = None) -> torch.Tensor:
    """The inference kernel of :func:`grouped_pointwise`: one batched GEMM per image
    from the (strided) input straight into the (shuffled) layout of ``out``, no copies.

    Args:
        out: Contiguous (N, C_out, H, W) output, overwritten and returned.
        mats: (G, C_out / G, C_in / G) per-group weight matrices.
        x: (N, C_in, H, W) input.
        strided_input / shuffle_output: As in :func:`grouped_pointwise`.
        start: Bias from :func:`gemm_start` (the GEMM's accumulator start), or None.

    Returns:
        ``out``. No autograd: call it only in
        :func:`inference_fast_path`.

    Example:
        >>> x, w = torch.rand(1, 8, 3, 3), torch.rand(12, 2, 1, 1)
        >>> y = grouped_gemm_into(torch.empty(1, 12, 3, 3), w.view(4, 3, 2), x)
        >>> torch.allclose(y, F.conv2d(x, w, groups=4), atol=1e-6)
        True
    """
    groups, per_out, per_in = mats.shape
    hw = x.shape[2] * x.shape[3]
    # A batch of one is viewed whole (no per-image indexing: at batch 1 the calls of
    # view ops are a measurable part of a forward).
    images = ((x, out),) if x.shape[0] == 1 else zip(x, out)
    for image, target in images:
        if strided_input:
            cols = image.reshape(per_in, groups, hw).transpose(0, 1)
        else:
            cols = image.reshape(groups, per_in, hw)
        if shuffle_output:
            dst = target.view(per_out, groups, hw).transpose(0, 1)
        else:
            dst = target.view(groups, per_out, hw)
        if start is None:
            torch.bmm(mats, cols, out=dst)
        else:
            torch.baddbmm(start, mats, cols, out=dst)
    return out


def uses_depthwise(in_channels: int, out_channels: int, groups: int,
                   max_out: int = DEPTHWISE_MAX_OUT) -> bool:
    """Whether :func:`grouped_conv2d` takes the depthwise route for these sizes (at most
    ``max_out`` outputs per group)."""
    return 1 < groups < in_channels and out_channels // groups <= max_out


def grouped_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1,
                   padding: int = 0, groups: int = 1, *,
                   out: torch.Tensor | None = None,
                   depthwise_max_out: int = DEPTHWISE_MAX_OUT) -> torch.Tensor:
    """``F.conv2d`` without bias, faster on CPU for groups with few outputs.

    With ``o = C_out / G <= depthwise_max_out`` outputs per group, output ``j`` of every
    group is a depthwise conv of all inputs (each with its own kernel) summed over the
    group's ``C_in / G`` inputs; ``o`` depthwise passes do the work of the grouped conv
    with the same multiply-adds. Other shapes call ``F.conv2d``; a grouped conv with
    more outputs per group does so on channels-last copies of ``x`` and ``weight`` in
    :func:`inference_fast_path` (faster in the whole deploy model, the copies
    included: ``bench/latency_224.py``, ``bench/detection_backbone.py``) and returns a
    contiguous NCHW result all the same.

    Args:
        x: (N, C_in, H, W) input.
        weight: (C_out, C_in / G, K, K) kernels.
        stride / padding / groups: As in ``F.conv2d``.
        out: Where to write the (N, C_out, H', W') result, e.g. a channel slice of a
            larger buffer; in :func:`inference_fast_path` the depthwise route sums
            straight into it (no autograd through ``out``).
        depthwise_max_out: Most outputs per group computed as depthwise passes
            (:data:`DEPTHWISE_MAX_OUT` for PyTorch, :data:`EXPORT_DEPTHWISE_MAX_OUT`
            in an ONNX export; 0: ``F.conv2d`` for every shape).

    Returns:
        The result (``out`` when given).

    Example:
        >>> x, w = torch.rand(1, 32, 9, 9), torch.rand(8, 4, 3, 3)
        >>> y = grouped_conv2d(x, w, padding=1, groups=8)
        >>> torch.allclose(y, F.conv2d(x, w, padding=1, groups=8), atol=1e-5)
        True
        >>> buf = torch.zeros(1, 12, 9, 9)
        >>> _ = grouped_conv2d(x, w, padding=1, groups=8, out=buf[:, 4:])
        >>> torch.equal(buf[:, 4:], y), buf[:, :4].abs().sum().item()
        (True, 0.0)
    """
    c_out, c_in_g = weight.shape[:2]
    n, c_in = x.shape[:2]
    if not uses_depthwise(c_in, c_out, groups, depthwise_max_out):
        nhwc = 1 < groups < c_in and inference_fast_path()
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
            weight = weight.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, weight, None, stride, padding, 1, groups)
        if out is not None:
            return out.copy_(y)
        return y.contiguous() if nhwc else y
    per_out = c_out // groups
    kernels = weight.reshape(groups, per_out, c_in_g, *weight.shape[2:])
    into = inference_fast_path()
    outs = []
    for j in range(per_out):
        dw = kernels[:, j].reshape(c_in, 1, *weight.shape[2:])
        y = F.conv2d(x, dw, None, stride, padding, 1, c_in)
        y = y.reshape(n, groups, c_in_g, *y.shape[2:])
        if into:  # sum each group straight into output channel g * per_out + j
            if out is None:
                out = y.new_empty(n, c_out, *y.shape[3:])
            torch.sum(y, 2, out=out.unflatten(1, (groups, per_out))[:, :, j])
        else:
            outs.append(y.sum(2))
    if into:
        return out
    # (N, G, per_out, H, W): channel g * per_out + j
    y = outs[0] if per_out == 1 else torch.stack(outs, 2).flatten(1, 2)
    return y if out is None else out.copy_(y)
