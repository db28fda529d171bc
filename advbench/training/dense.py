"""The training loop shared by the dense-prediction tasks (SOD, multi-task): seeded minibatches, augmentation on
the CPU, Adam with a cosine learning-rate decay to 5 % of ``lr``, and per-epoch losses.

Each task supplies how a minibatch is augmented and what its loss is; the loop owns the order of the seeded
draws (one ``randperm`` per epoch, then the task's augmentation draws per batch), so a seed gives the same
minibatches and augmentations on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advbench.progress import progress_bar

#: ``augment(x, target, generator) -> (x, target)``: draws from ``generator`` on the CPU.
Augment = Callable[[torch.Tensor, Any, torch.Generator], tuple[torch.Tensor, Any]]
#: ``loss(model, x, target) -> (loss, parts)``: the scalar to minimise and named parts to report (may be empty).
Loss = Callable[[nn.Module, torch.Tensor, Any], tuple[torch.Tensor, Mapping[str, torch.Tensor]]]


@dataclass
class DenseFitHistory:
    """Optimiser steps taken, mean training loss per epoch, and the same per named part (e.g. per task)."""

    steps: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    part_losses: list[dict[str, float]] = field(default_factory=list)


def _to(target: Any, device: torch.device) -> Any:
    if isinstance(target, Mapping):
        return {k: v.to(device) for k, v in target.items()}
    return target.to(device)


def fit_dense(model: nn.Module, x_train: torch.Tensor, select: Callable[[torch.Tensor], Any], loss_fn: Loss, *,
              epochs: int, batch_size: int, lr: float, generator: torch.Generator, augment: Augment | None = None,
              device: torch.device | str = "cpu", desc: str = "train", progress: bool = True) -> DenseFitHistory:
    """Train ``model`` (already on ``device``) in place; ``select(idx)`` gives the targets of training images
    ``idx`` (a tensor or a dict of tensors, on the CPU).  Batches are drawn and augmented on the CPU, then moved
    to ``device``.  The model is left in eval mode."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(x_train)
    total = epochs * math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=total, eta_min=0.05 * lr)
    history = DenseFitHistory(steps=total)
    model.train()
    bar = progress_bar(total=total, desc=desc, unit="step", enabled=progress)
    try:
        for _epoch in range(epochs):
            order = torch.randperm(n, generator=generator)
            running = 0.0
            parts_running: dict[str, float] = {}
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                x, target = x_train[idx], select(idx)
                if augment is not None:
                    x, target = augment(x, target, generator)
                loss, parts = loss_fn(model, x.to(device), _to(target, device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                running += loss.item() * len(idx)
                for name, value in parts.items():
                    parts_running[name] = parts_running.get(name, 0.0) + value.item() * len(idx)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            history.epoch_losses.append(running / n)
            history.part_losses.append({k: v / n for k, v in parts_running.items()})
    finally:
        bar.close()
    model.eval()
    return history
