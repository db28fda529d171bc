"""The wrapper that puts normalization inside the model (attacks never normalize: they see [0, 1] images)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class NormalizedModel(nn.Module):
    """``net((x - mean) / std)`` for [0,1] inputs ``x``; records the shape contract it was built for."""

    def __init__(
        self,
        net: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        input_shape: Sequence[int],
        num_classes: int,
        arch: str = "",
    ) -> None:
        super().__init__()
        self.net = net
        channels = int(input_shape[0])
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.shape[1] != channels or std_t.shape[1] != channels:
            raise ValueError(f"mean/std need {channels} values (one per channel)")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = int(num_classes)
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def normalization(self) -> dict[str, list[float]]:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}
