"""Model analysis: complexity (multiply-adds, the papers' FLOPs, parameters)."""
from .complexity import (ComplexityCounter, count_complexity, count_mmengine,
                         count_params, format_count, to_deploy_form)

__all__ = [
    'ComplexityCounter', 'count_complexity', 'count_mmengine', 'count_params',
    'format_count', 'to_deploy_form'
]
