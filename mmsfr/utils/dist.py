"""Distributed start-up on machines without GPUs."""
from __future__ import annotations

import torch
import torch.distributed as dist


def init_cpu_dist(launcher: str) -> bool:
    """Start a gloo process group for ``--launcher pytorch`` when no GPU is usable.

    mmengine 0.10.7's ``init_dist`` always calls ``torch.cuda.set_device``, which fails
    on CPU-only machines. The Runner skips its own initialisation when a process group
    already exists, so the tools create one here first (from torchrun's environment).

    Returns:
        True when a process group was started here.

    Example:
        >>> init_cpu_dist('none')
        False
    """
    if launcher != 'pytorch' or torch.cuda.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend='gloo')
    return True


def close_dist() -> bool:
    """End the process group of a finished run: a barrier, then its destruction.

    torch 2.x can abort a rank at interpreter exit ("terminate called without an
    active exception") when a gloo process group is still alive while its peer has
    already gone; mmengine never destroys the group it or :func:`init_cpu_dist`
    started, so the tools call this after their work is done.

    Returns:
        True when a process group was closed.

    Example:
        >>> close_dist()  # nothing to close in a single-process run
        False
    """
    if not dist.is_available() or not dist.is_initialized():
        return False
    dist.barrier()
    dist.destroy_process_group()
    return True
