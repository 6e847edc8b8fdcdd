"""What every mmsfr backbone shares: mmdet's freezing and norm-eval conventions."""
from __future__ import annotations

from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class FreezableBackbone(BaseModule):
    """Base of mmsfr backbones: ``frozen_stages`` and ``norm_eval`` as in mmdet.

    Subclasses set ``self.stem``, ``self.frozen_stages``, ``self.norm_eval`` and
    implement :meth:`stage_modules`. Freezing is re-applied by every ``train()`` call,
    so ``model.train()`` never un-freezes.
    """

    frozen_stages: int = -1
    norm_eval: bool = False

    def stage_modules(self) -> list[nn.Module]:
        """The stages ``frozen_stages`` counts, in order (the stem comes first)."""
        raise NotImplementedError

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
