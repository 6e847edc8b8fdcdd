"""Data transforms registered in mmengine's root TRANSFORMS registry."""
from __future__ import annotations

from mmcv.transforms import LoadImageFromFile
from mmengine.logging import MMLogger
from mmengine.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadImageOrSkip(LoadImageFromFile):
    """``LoadImageFromFile`` that reports images which fail to load or decode.

    With ``skip=True`` (training) a broken image is logged with its path and the
    transform returns None, so the mmengine dataset draws another sample instead of
    crashing inside a dataloader worker. With ``skip=False`` (evaluation, where every
    image must be scored) it raises one ``ValueError`` naming the file.

    Args:
        skip: Skip broken images (True) or raise on them (False).
        **kwargs: Passed to mmcv's ``LoadImageFromFile``.

    Example:
        >>> train_pipeline = [dict(type='LoadImageOrSkip', skip=True),
        ...                   dict(type='LoadAnnotations', with_bbox=True)]
    """

    def __init__(self, skip: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.skip = skip

    def transform(self, results: dict) -> dict | None:
        path = results.get('img_path')
        try:
            out = super().transform(results)
        except Exception as err:  # noqa: BLE001  (any decode/IO failure)
            reason = f'{type(err).__name__}: {err}'
        else:
            if out is not None:
                return out
            reason = 'file missing'
        if not self.skip:
            raise ValueError(f'cannot load image {path} ({reason})')
        MMLogger.get_current_instance().warning(f'skipping image {path}: {reason}')
        return None

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', skip={self.skip})'
