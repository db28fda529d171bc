"""The one model registry, :data:`MODELS`, and the classifier front door ``create_model`` / ``list_models``
in the style of timm.

Every task's architectures register in :data:`MODELS` with the task they serve (:mod:`advbench.task_names`):
the classifiers here, the SOD U-Net (:mod:`advbench.models.sod`), the multi-task net
(:mod:`advbench.models.multitask`) and the detectors (:mod:`advbench.models.detectors`).

A registered factory takes the input shape ``(C, H, W)`` and the class count of the dataset and
returns a bare network that expects *normalized* input; :func:`create_model` wraps it in a
:class:`~advbench.models.wrapper.NormalizedModel` so the result takes [0,1] images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from advbench.errors import ConfigError
from advbench.models.wrapper import NormalizedModel
from advbench.registry import Registry
from advbench.task_names import CLASSIFICATION

ModelFactory = Callable[..., nn.Module]
#: Architecture name -> factory, for every task (see :meth:`advbench.registry.Registry.names` with ``task=``).
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str, task: str = CLASSIFICATION) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a factory; a classifier's is ``fn(input_shape, num_classes, **kw) -> nn.Module``."""
    return MODELS.register(name, task=task)


def list_models(pattern: str | None = None, task: str | None = CLASSIFICATION) -> list[str]:
    """Registered model names of ``task`` (wildcards allowed; None: every task); ``timm:<name>`` builds any timm
    architecture."""
    return MODELS.names(pattern, task=task)


def create_model(
    name: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs,
) -> NormalizedModel:
    """Build ``name`` for inputs of ``input_shape`` and ``num_classes`` outputs, normalization inside.

    ``name`` is a registered model (``mlp``, ``small_cnn``, ``lenet5``, ``resnet20``) or
    ``timm:<architecture>`` (random init unless ``weights=PATH`` gives a local weights file).
    """
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConfigError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if name.startswith("timm:"):
        from advbench.models.timm_adapter import create_timm_model

        net = create_timm_model(name.split(":", 1)[1], input_shape=input_shape, num_classes=num_classes, **kwargs)
    else:
        net = MODELS.get(name, task=CLASSIFICATION)(input_shape, num_classes, **kwargs)
    channels = input_shape[0]
    return NormalizedModel(
        net,
        mean=mean if mean is not None else (0.0,) * channels,
        std=std if std is not None else (1.0,) * channels,
        input_shape=input_shape,
        num_classes=num_classes,
        arch=name,
    )
