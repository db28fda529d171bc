"""The model zoo: built-in small nets, the timm adapter and the normalization wrapper."""

from advbench.models import nets as _nets  # noqa: F401  (registers the built-in nets)
from advbench.models import robustbench_archs as _robustbench_archs  # noqa: F401  (RobustBench CIFAR nets)
from advbench.models.registry import MODELS, create_model, list_models, register_model
from advbench.models.wrapper import NormalizedModel

__all__ = ["MODELS", "NormalizedModel", "create_model", "list_models", "register_model"]
