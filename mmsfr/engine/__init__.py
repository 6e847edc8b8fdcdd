"""Training-loop components (hooks) registered in mmengine's root registries."""
from .hooks import *  # noqa: F401,F403
