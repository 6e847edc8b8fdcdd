# Runtime of the condensing (LGC/SFR) recipes: the papers' schedule prunes masks over the
# first half of training; EMA 0.9998 (mmengine momentum 2e-4), whose masks the
# CondensationHook keeps identical to the live model's.
_base_ = ['./default_runtime.py']
custom_hooks = [
    dict(type='CondensationHook', end=0.5),
    dict(type='EMAHook', momentum=0.0002, priority='ABOVE_NORMAL'),
]
