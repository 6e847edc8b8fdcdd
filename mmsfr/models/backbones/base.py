"""What every mmsfr backbone shares.

:class:`FreezableBackbone` holds, once, what the backbone families would otherwise
repeat: arch resolution (:meth:`~FreezableBackbone.resolve_arch` over the family's
``arch_settings`` table), the checks of ``out_indices`` (:func:`resolve_out_indices`)
and ``frozen_stages``, the ``out_channels`` / ``out_strides`` / ``feature_info`` of the
outputs, the refusal of a checkpoint of another arch or family when loading, mmdet's
freezing and norm-eval conventions and the deploy protocol
(:mod:`mmsfr.models.deploy`). A family supplies its table, how to read its arch from a
state_dict and how to describe an arch.
"""
from __future__ import annotations

import copy
from collections.abc import Hashable
from typing import Any, Sequence

from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..deploy import Deployable

__all__ = ['FreezableBackbone', 'resolve_out_indices']


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

    Returns:
        The levels, in the order given.

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
    """Base of mmsfr backbones.

    What it gives a family:

    * :meth:`resolve_arch`: an arch name (a key of ``arch_settings``) or a custom dict
      to its settings, with one error naming a bad value and the valid choices;
    * :meth:`_check_frozen_stages` and :meth:`_set_levels` (``out_channels``,
      ``out_strides`` and ``feature_info`` of the outputs in ``out_indices``);
    * on ``load_state_dict``: a checkpoint of another arch is refused with one
      ``ValueError`` naming both archs; a ``Pretrained`` checkpoint of another family
      with one naming the file (:meth:`init_weights`);
    * ``frozen_stages`` and ``norm_eval`` as in mmdet: freezing is re-applied by every
      ``train()`` call, so ``model.train()`` never un-freezes;
    * the deploy protocol (:mod:`mmsfr.models.deploy`): ``switch_to_deploy()``
      converts the whole backbone (its layers first, then :meth:`convert_own_parts`).

    A family sets ``arch_settings`` (and ``arch_required`` / ``arch_defaults``),
    implements :meth:`_custom_arch`, :meth:`_arch_in_state_dict`,
    :meth:`_arch_signature`, :meth:`_describe_arch` and :meth:`stage_modules`, and sets
    ``self.stem``, ``self.out_indices``, ``self.frozen_stages``, ``self.norm_eval`` and
    ``self.deploy`` in ``__init__``.

    Example:
        >>> from mmsfr.models import CondenseNetV2, ShuffleNetV2
        >>> issubclass(CondenseNetV2, FreezableBackbone)
        True
        >>> ShuffleNetV2(arch='0.5x', frozen_stages=1).train().stem.training
        False
    """

    #: The family's named archs: name -> settings.
    arch_settings: dict[str, dict] = {}
    #: Keys a custom arch dict must hold.
    arch_required: tuple[str, ...] = ()
    #: Settings of keys an arch may omit (both named and custom archs start from them).
    arch_defaults: dict[str, Any] = {}
    #: Verb of the arch-mismatch error: "the checkpoint <verb> <arch> but ...".
    checkpoint_verb: str = 'holds'

    frozen_stages: int = -1
    norm_eval: bool = False
    changes_network = False  # its own parts at most fold BatchNorms

    # ------------------------------------------------------------------ arch
    @classmethod
    def resolve_arch(cls, arch: str | dict) -> tuple[str, dict]:
        """Return ``(name, settings)`` for an arch name or dict; raise on bad input.

        A name is looked up in ``arch_settings`` (after :meth:`_arch_key`); a dict is
        checked by :meth:`_custom_arch` and named ``'custom'``. Both start from
        ``arch_defaults`` and are checked by :meth:`_check_settings`.

        Args:
            arch: A key of ``arch_settings`` or a dict of settings.

        Returns:
            The arch's name and a fresh copy of its settings.

        Raises:
            ValueError: naming an unknown name and the valid ones (and the keys a dict
                takes), or a bad custom arch.
            TypeError: if ``arch`` is neither a str nor a dict.

        Example:
            >>> from mmsfr.models import CondenseNetV2, ShuffleNetV2
            >>> ShuffleNetV2.resolve_arch('0.5x')[1]['stage_channels']
            (48, 96, 192)
            >>> CondenseNetV2.resolve_arch('x')
            Traceback (most recent call last):
            ...
            ValueError: CondenseNetV2: unknown arch 'x'; valid archs are ['a', 'b', 'c', 'cifar-110', 'cifar-146'] or a dict with keys ['depths', 'growths', 'groups', 'condense_factor', 'sparse_factor', 'hs_from', 'se_from', 'stem_stride']
        """
        if isinstance(arch, str):
            key = cls._arch_key(arch)
            if key not in cls.arch_settings:
                raise ValueError(f'{cls.__name__}: unknown arch {arch!r}; valid archs are '
                                 f'{list(cls.arch_settings)} or a dict with keys '
                                 f'{[*cls.arch_required, *cls.arch_defaults]}')
            name = key
            settings = copy.deepcopy(cls.arch_defaults)
            settings.update(copy.deepcopy(cls.arch_settings[key]))
        elif isinstance(arch, dict):
            name, settings = 'custom', cls._custom_arch(copy.deepcopy(arch))
        else:
            raise TypeError(f'{cls.__name__}: arch must be a str or dict, got {type(arch)}')
        cls._check_settings(settings)
        return name, settings

    @classmethod
    def _arch_key(cls, name: str) -> str:
        """The ``arch_settings`` key an arch name stands for (the name itself here)."""
        return name

    @classmethod
    def _custom_arch(cls, arch: dict) -> dict:
        """Check a custom arch dict (a copy) and return its settings."""
        raise NotImplementedError

    @classmethod
    def _check_settings(cls, settings: dict) -> None:
        """Check (and normalise in place) the settings of any arch; none by default."""

    # ------------------------------------------------------------------ levels
    def _check_frozen_stages(self, frozen_stages: int, num_stages: int) -> int:
        """Return ``frozen_stages`` if it is in ``-1..num_stages``, else raise."""
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'{type(self).__name__}: frozen_stages={frozen_stages} out of '
                             f'range; valid values are -1..{num_stages}')
        return frozen_stages

    def _set_levels(self, channels: Sequence[int], strides: Sequence[int],
                    modules: Sequence[str]) -> None:
        """Set ``out_channels``, ``out_strides`` and ``feature_info`` of the outputs in
        ``self.out_indices`` from the channels, stride and module name of every level."""
        indices = self.out_indices
        self.out_channels = tuple(channels[i] for i in indices)
        self.out_strides = tuple(strides[i] for i in indices)
        self.feature_info = [dict(num_chs=channels[i], reduction=strides[i],
                                  module=modules[i]) for i in indices]

    def stage_modules(self) -> list[nn.Module]:
        """The stages ``frozen_stages`` counts, in order (the stem comes first)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ deploy
    def convert_own_parts(self, name: str = '') -> None:
        """Convert the backbone's own parts (none by default: its layers convert
        themselves) and mark it deployed."""
        self.deploy = True

    # ------------------------------------------------------------------ train
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for module in [self.stem, *self.stage_modules()[:self.frozen_stages]]:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'FreezableBackbone':
        """Set train mode, keeping frozen stages (and all norms if ``norm_eval``) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # ------------------------------------------------------------------ checkpoints
    def _arch_in_state_dict(self, state_dict: dict, prefix: str) -> Hashable | None:
        """The arch of the weights under ``prefix`` in ``state_dict``, in the form of
        :meth:`_arch_signature`, or None when it cannot be read."""
        return None

    def _arch_signature(self) -> Hashable:
        """This model's arch, as :meth:`_arch_in_state_dict` reads one."""
        raise NotImplementedError

    def _describe_arch(self, signature: Hashable) -> str:
        """An arch signature in words, for the arch-mismatch error."""
        raise NotImplementedError

    def _check_state_dict(self, state_dict: dict, prefix: str) -> None:
        """Refuse (one ``ValueError`` naming both) weights of another arch.

        Runs before the weights are copied; families extend it (and may rewrite
        ``state_dict`` in place, e.g. to fold norms)."""
        found = self._arch_in_state_dict(state_dict, prefix)
        if found is None:
            return
        mine = self._arch_signature()
        if found != mine:
            raise ValueError(
                f'{type(self).__name__}: the checkpoint {self.checkpoint_verb} '
                f'{self._describe_arch(found)} but the model is {self._describe_arch(mine)}; '
                'pick the config of that arch')

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

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: list[str],
                              unexpected_keys: list[str], error_msgs: list[str]) -> None:
        self._check_state_dict(state_dict, prefix)
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
