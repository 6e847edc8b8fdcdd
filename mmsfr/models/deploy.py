"""The deploy protocol: how a model goes from its train-time form to its deploy form.

A module with two forms derives from :class:`Deployable`. It owns the conversion of its
own parts: :meth:`Deployable.check_deployable` says whether they can be converted now,
and :meth:`Deployable.convert_own_parts` replaces them by their deploy form in place
(exact in eval mode, except a :class:`~mmsfr.models.layers.CondensingLinear`, whose
conversion prunes). :meth:`Deployable.switch_to_deploy` converts a module and
everything inside it. Building a module with ``deploy=True`` gives the deploy form
directly, e.g. to load converted weights.

Everything else asks this module:

* :func:`pending_deploy`: the one answer to "is anything in this model still in its
  train-time form?" (used by the conversion tools, the complexity counter and the
  exporter);
* :func:`convert_to_deploy`: converts a whole model, checking every part first so that
  an unfinished model is left untouched.

The life cycle of a CondenseNet is train-time (masked) -> condensed (masks pruned to
their final density by :class:`~mmsfr.engine.hooks.CondensationHook`) -> deploy
(:func:`convert_to_deploy`) -> exported (``tools/deployment/export_onnx.py``).
``docs/architecture.md`` draws it.
"""
from __future__ import annotations

from torch import nn

__all__ = ['Deployable', 'convert_to_deploy', 'deployable_modules', 'pending_deploy']


class Deployable:
    """Mixin of an ``nn.Module`` with a train-time and a deploy form.

    Subclasses set ``self.deploy`` in ``__init__`` (True when built in the deploy form)
    and implement :meth:`convert_own_parts`, which converts the module's own parts
    (not the :class:`Deployable` modules inside it: :func:`convert_to_deploy` converts
    those first) and sets ``deploy``. :meth:`check_deployable` raises when the module
    cannot be converted yet (e.g. condensation unfinished).

    Example:
        >>> from mmsfr.models.layers import LearnedGroupConv
        >>> lgc = LearnedGroupConv(8, 8, groups=2, factor=2)
        >>> isinstance(lgc, Deployable), lgc.deploy
        (True, False)
    """

    deploy: bool = False
    #: Whether the train-time form is another network than the deploy form (a masked
    #: LGC/SFR, an unpruned condensing linear layer), rather than the same function in
    #: other parameters (BatchNorms folded into convs). The exporter refuses the
    #: former, and the complexity counter counts them in their deploy form.
    changes_network: bool = True

    def check_deployable(self, name: str = '') -> None:
        """Raise (naming ``name``) unless :meth:`convert_own_parts` can run now."""

    def convert_own_parts(self, name: str = '') -> None:
        """Convert this module's own parts in place and set ``self.deploy``."""
        raise NotImplementedError

    def switch_to_deploy(self, name: str = '') -> None:
        """Convert this module and every :class:`Deployable` inside it in place (a no-op
        for parts already converted); see :func:`convert_to_deploy`."""
        convert_to_deploy(self, prefix=name)


def deployable_modules(model: nn.Module) -> list[tuple[str, Deployable]]:
    """Every :class:`Deployable` module of ``model`` (itself included), with its name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Deployable)]


def pending_deploy(model: nn.Module, *, network_changes_only: bool = False) -> list[str]:
    """Names of the modules of ``model`` still in their train-time form ([] if none).

    Args:
        model: Any model.
        network_changes_only: Name only modules whose train-time form is another
            network (:attr:`Deployable.changes_network`), not those that only fold
            their BatchNorms when converted.

    Example:
        >>> from mmsfr.models.backbones import CondenseNetV2, ShuffleNetV2
        >>> pending_deploy(CondenseNetV2('a', deploy=True))
        []
        >>> pending_deploy(CondenseNetV2('a'))[:3]  # '' is the model itself
        ['', 'blocks.0.0.conv_1', 'blocks.0.0.sfr']
        >>> pending_deploy(ShuffleNetV2('0.5x'))[:2], pending_deploy(
        ...     ShuffleNetV2('0.5x'), network_changes_only=True)
        (['', 'stages.0.0'], [])
    """
    return [name for name, m in deployable_modules(model)
            if not m.deploy and (m.changes_network or not network_changes_only)]


def convert_to_deploy(model: nn.Module, prefix: str = '') -> nn.Module:
    """Convert every train-time part of ``model`` in place to its deploy form.

    Every pending module is checked first (:meth:`Deployable.check_deployable`), so a
    model that cannot be converted is left untouched. Modules are converted innermost
    first, so a module converting itself sees its parts already converted.

    Args:
        model: The model, converted in place.
        prefix: Name of ``model`` in a larger model, for the messages.

    Returns:
        ``model``.

    Raises:
        RuntimeError: naming the first layer whose condensation is unfinished.
        ValueError: naming a layer whose state cannot be converted exactly (e.g. an
            edited mask).

    Example:
        >>> import torch
        >>> from mmsfr.models.backbones import CondenseNetV2
        >>> from mmsfr.models.layers import condense_model
        >>> model = CondenseNetV2('a').eval()
        >>> _ = condense_model(model, progress=1.0)
        >>> x = torch.rand(1, 3, 64, 64)
        >>> y = model(x)[-1]
        >>> torch.allclose(convert_to_deploy(model)(x)[-1], y, atol=1e-5)
        True
    """
    pending = [('.'.join(filter(None, (prefix, name))), m)
               for name, m in deployable_modules(model) if not m.deploy]
    for name, module in pending:
        module.check_deployable(name)
    for name, module in reversed(pending):  # children come after parents in the list
        module.convert_own_parts(name)
    return model
