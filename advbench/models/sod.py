"""SOD models: a registry of architectures and :class:`SODModel`, which maps [0,1] images to saliency logits.

Normalisation lives inside the model (attacks never normalise: they see [0, 1] images). ``unet-sod`` is the small
U-Net of :mod:`advbench.models.unet` (Ronneberger et al., MICCAI 2015) with one output channel, standing in for the
SOD victims of Sun, Fu, Li et al. (arXiv 2306.17431).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from advbench.errors import ConfigError, InputError
from advbench.models.registry import MODELS
from advbench.models.unet import UNet
from advbench.task_names import SOD

#: Architectures register in the one model registry, :data:`advbench.models.registry.MODELS`, with task SOD.

DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.25, 0.25, 0.25)


class SODModel(nn.Module):
    """``net((x - mean) / std)`` for [0,1] images ``x`` ``(B,3,H,W)``; returns saliency logits ``(B,1,H,W)``.

    ``arch`` and ``options`` rebuild the network (see :func:`create_sod_model`); ``input_size`` is the (H, W) it
    was trained at, when known.  :meth:`probabilities` applies the sigmoid.
    """

    def __init__(self, net: nn.Module, *, arch: str, options: dict[str, Any], mean: Sequence[float] = DEFAULT_MEAN,
                 std: Sequence[float] = DEFAULT_STD, input_size: Sequence[int] | None = None) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.shape[1] != 3 or std_t.shape[1] != 3 or bool((std_t <= 0).any()):
            raise ConfigError(f"SOD model '{arch}': mean and std need 3 values (one per RGB channel), std > 0; got "
                              f"mean={list(mean)}, std={list(std)}")
        self.net = net
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.arch = arch
        self.options = dict(options)
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"SOD model '{self.arch}' expects [0,1] images (B,3,H,W), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        return self.net((x - self.mean) / self.std)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
        """Sigmoid saliency maps ``(B,1,H,W)`` in [0,1], computed in batches without gradients."""
        return torch.cat([self(x[i:i + batch_size]).sigmoid() for i in range(0, len(x), batch_size)])

    def normalization(self) -> dict[str, list[float]]:
        """The per-channel mean and std applied to the input."""
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def metadata(self) -> dict[str, Any]:
        """What :func:`advbench.training.sod.load_sod_model` needs to rebuild this model."""
        return {"task": "sod", "arch": self.arch, "model_options": dict(self.options),
                "normalization": self.normalization(),
                "input_size": None if self.input_size is None else list(self.input_size)}


@MODELS.register("unet-sod", task=SOD)
def unet_sod(*, base: int = 16, depth: int = 3) -> nn.Module:
    """The U-Net of Ronneberger et al. (MICCAI 2015) with one output channel (saliency logits)."""
    return UNet(in_channels=3, out_channels=1, base=base, depth=depth)


def create_sod_model(name: str, *, mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD,
                     input_size: Sequence[int] | None = None, **options: Any) -> SODModel:
    """Build SOD architecture ``name`` (``list_models(task=SOD)``) wrapped in :class:`SODModel`.

    ``options`` go to the architecture's factory (``unet-sod``: ``base``, ``depth``); unknown ones raise
    :class:`ConfigError` listing the valid ones.

    >>> model = create_sod_model("unet-sod", base=4, depth=2)
    >>> model(torch.rand(1, 3, 16, 16)).shape
    torch.Size([1, 1, 16, 16])
    """
    factory = MODELS.get(name, task=SOD)
    valid = [p.name for p in inspect.signature(factory).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"SOD model '{name}' has no option {', '.join(unknown)}; valid options: "
                          f"{', '.join(valid) or '(none)'}")
    return SODModel(factory(**options), arch=name, options=options, mean=mean, std=std, input_size=input_size)
