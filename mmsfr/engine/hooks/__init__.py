from .condensation_hook import CondensationHook, copy_condensation_state

__all__ = ['CondensationHook', 'copy_condensation_state']
