from .condensenet import CondenseNet, CondenseNetV2

__all__ = ['CondenseNet', 'CondenseNetV2']
