from .cls_heads import CondenseNetV2ClsHead

__all__ = ['CondenseNetV2ClsHead']
