"""Drive the condensation schedule of LGC/SFR layers from an mmengine runner."""
from __future__ import annotations

from mmengine.hooks import EMAHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmsfr.models.layers import condense_model, condensing_layers

#: Buffers that define a layer's sparsity; EMA copies must mirror them exactly.
CONDENSATION_BUFFERS = ('_mask', '_stage', '_count')


@HOOKS.register_module()
class CondensationHook(Hook):
    """Prune LGC/SFR masks as training progresses (the CondenseNet schedule).

    Before every training iteration the progress ``runner.iter / runner.max_iters``
    (scaled so that condensation ends at ``end``; the papers use 0.5) is pushed to
    every condensing layer, which prunes all stages due, including any it skipped.
    The stage counters live in the model's state_dict, so a resumed run continues
    exactly. After each iteration the masks of an ``EMAHook``'s averaged model are
    overwritten with the live model's: masks are copied, never averaged.

    Args:
        end: Fraction of training at which condensation is complete (0 < end <= 1).

    Example:
        >>> custom_hooks = [dict(type='CondensationHook'),
        ...                 dict(type='EMAHook', momentum=0.0002, priority='ABOVE_NORMAL')]
    """

    priority = 'LOW'  # after EMAHook (NORMAL / ABOVE_NORMAL) in after_train_iter

    def __init__(self, end: float = 0.5) -> None:
        if not 0 < end <= 1:
            raise ValueError(f'CondensationHook: end={end} must be in (0, 1]')
        self.end = end

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def progress(self, runner) -> float:
        """Schedule progress in the papers' convention (0.5 = fully condensed)."""
        return min(1.0, runner.iter / max(1, runner.max_iters) * 0.5 / self.end)

    def before_train(self, runner) -> None:
        if not condensing_layers(self._model(runner)):
            runner.logger.warning('CondensationHook: the model has no LGC/SFR layer')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        applied = condense_model(self._model(runner), self.progress(runner))
        if applied:
            runner.logger.info(f'CondensationHook: {applied} layer-stages pruned at iter '
                               f'{runner.iter} (progress {self.progress(runner):.4f})')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.sync_ema(runner)

    def sync_ema(self, runner) -> None:
        """Copy the condensation buffers of the live model into every EMA model."""
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and hasattr(hook, 'ema_model'):
                copy_condensation_state(self._model(runner), hook.ema_model.module)


def copy_condensation_state(src, dst) -> None:
    """Copy masks and stage counters of every LGC/SFR layer from ``src`` to ``dst``."""
    dst_layers = dict(condensing_layers(dst))
    for name, layer in condensing_layers(src):
        target = dst_layers[name]
        for buf in CONDENSATION_BUFFERS:
            if hasattr(layer, buf):
                getattr(target, buf).copy_(getattr(layer, buf))
