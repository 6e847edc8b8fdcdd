"""Datasets and transforms (registered in mmengine's root registries)."""
from .transforms import LoadImageOrSkip

__all__ = ['LoadImageOrSkip']
