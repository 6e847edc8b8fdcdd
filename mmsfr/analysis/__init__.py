"""Model analysis: complexity (multiply-adds, the papers' FLOPs, parameters) and the
learned connectivity of CondenseNets (the CondenseNetV2 paper's Figs. 6-7)."""
from .complexity import (ComplexityCounter, config_forward, count_complexity, count_mmengine,
                         count_params, format_count, to_deploy_form)
from .connectivity import (Connectivity, DenseLayerWeights, DenseNetWeights,
                           block_connectivity, dense_weights, load_dense_state_dict,
                           network_connectivity)

__all__ = [
    'ComplexityCounter', 'Connectivity', 'config_forward', 'DenseLayerWeights', 'DenseNetWeights',
    'block_connectivity', 'count_complexity', 'count_mmengine', 'count_params',
    'dense_weights', 'format_count', 'load_dense_state_dict', 'network_connectivity',
    'to_deploy_form'
]
