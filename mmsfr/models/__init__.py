"""mmsfr models: backbones, heads and the shared layers (registered in mmengine's
root MODELS registry, so mmdet and mmpretrain configs both find them)."""
from .backbones import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .layers import condense_model, convert_to_deploy  # noqa: F401
