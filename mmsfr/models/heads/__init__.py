from .cls_heads import CondenseNetV2ClsHead
from .shufflenet_heads import ShuffleNetV2ClsHead, ShuffleNetV2PlusClsHead

__all__ = ['CondenseNetV2ClsHead', 'ShuffleNetV2ClsHead', 'ShuffleNetV2PlusClsHead']
