"""What every mmsfr backbone shares: mmdet's freezing and norm-eval conventions."""
from __future__ import annotations

from typing import Sequence

from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..deploy import Deployable


def resolve_out_indices(owner: str, out_indices: Sequence[int] | None,
                        num_levels: int, default: Sequence[int],
                        last_name: str | None = None) -> tuple[int, ...]:
    """Check ``out_indices`` and return it as a tuple, in the order given.

    Every mmsfr backbone returns its outputs in exactly this order (and reports
    ``out_channels`` / ``feature_info`` in it). An index may appear once.

    Args:
        owner: The backbone's name, for the error message.
        out_indices: The requested levels, or None for ``default``.
        num_levels: Number of levels; valid indices are ``0..num_levels - 1``.
        default: The levels returned when ``out_indices`` is None.
        last_name: What the last level is (e.g. ``'conv_last'``), for the message.

    Raises:
        ValueError: naming the bad value and the valid indices: not a non-empty
            sequence of ints, an index out of range, or a repeated index.

    Example:
        >>> resolve_out_indices('Net', (3, 1), 5, (1, 2, 3, 4))
        (3, 1)
        >>> resolve_out_indices('Net', None, 5, (1, 2, 3, 4))
        (1, 2, 3, 4)
    """
    valid = f'valid indices are 0..{num_levels - 1}'
    if last_name:
        valid += f' ({num_levels - 1} = {last_name})'
    if out_indices is None:
        return tuple(default)
    if isinstance(out_indices, (str, bytes)) or not isinstance(out_indices, Sequence):
        raise ValueError(f'{owner}: out_indices must be a non-empty sequence of ints such '
                         f'as (1, 2, 3), got {out_indices!r}; {valid}')
    indices = tuple(out_indices)
    if not indices or not all(isinstance(i, int) and not isinstance(i, bool)
                              for i in indices):
        raise ValueError(f'{owner}: out_indices must be a non-empty sequence of ints such '
                         f'as (1, 2, 3), got {out_indices!r}; {valid}')
    bad = [i for i in indices if not 0 <= i < num_levels]
    if bad:
        raise ValueError(f'{owner}: out_indices {indices} out of range ({bad}); {valid}')
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise ValueError(f'{owner}: out_indices {indices} repeats {repeated}; give each '
                         f'index once ({valid})')
    return indices


class FreezableBackbone(Deployable, BaseModule):
    """Base of mmsfr backbones: ``frozen_stages`` and ``norm_eval`` as in mmdet, and the
    deploy protocol (:mod:`mmsfr.models.deploy`).

    Subclasses set ``self.stem``, ``self.frozen_stages``, ``self.norm_eval``,
    ``self.deploy`` and implement :meth:`stage_modules`. Freezing is re-applied by every
    ``train()`` call, so ``model.train()`` never un-freezes. ``switch_to_deploy()``
    converts the whole backbone (its layers first, then :meth:`convert_own_parts`).
    """

    frozen_stages: int = -1
    norm_eval: bool = False

    def stage_modules(self) -> list[nn.Module]:
        """The stages ``frozen_stages`` counts, in order (the stem comes first)."""
        raise NotImplementedError

    def convert_own_parts(self, name: str = '') -> None:
        """Convert the backbone's own parts (none by default: its layers convert
        themselves) and mark it deployed."""
        self.deploy = True

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for module in [self.stem, *self.stage_modules()[:self.frozen_stages]]:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def init_weights(self) -> None:
        """mmengine's ``init_weights``; a ``Pretrained`` checkpoint must fit the family.

        With ``init_cfg=dict(type='Pretrained', checkpoint=FILE, ...)`` a checkpoint in
        which no key belongs to this backbone (another family's weights, or a detector
        checkpoint without ``prefix='backbone.'``) stops with one error naming FILE and
        the expected family, instead of keeping random weights behind a missing-keys
        warning.

        Raises:
            ValueError: if no key of the pretrained checkpoint matches this backbone.
        """
        cfg = self.init_cfg
        cfgs = cfg if isinstance(cfg, list) else [cfg]
        files = [c.get('checkpoint') for c in cfgs
                 if isinstance(c, dict) and c.get('type') == 'Pretrained']
        if not files:
            super().init_weights()
            return
        self.__dict__['_pretrained_file'] = files[-1]
        try:
            super().init_weights()
        finally:
            self.__dict__.pop('_pretrained_file', None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        source = self.__dict__.get('_pretrained_file')
        if source is not None:
            mine = [prefix + key for key in self.state_dict()]
            if not any(key in state_dict for key in mine):
                family = type(self).__name__
                found = sorted(state_dict)[:3]
                hint = ''
                if any(k.startswith(prefix + 'backbone.') for k in state_dict):
                    hint = "; it looks like a whole model: add prefix='backbone.' to init_cfg"
                raise ValueError(
                    f'{source}: no weight of this checkpoint fits {family} '
                    f'(expected {family} keys such as {mine[0]!r}, found {found}){hint}')
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def train(self, mode: bool = True) -> 'FreezableBackbone':
        """Set train mode, keeping frozen stages (and all norms if ``norm_eval``) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
