"""Objectives: what a victim is asked to do, as far as attacks and defenses care (a per-sample loss and a
success test).

Objective-agnostic code (the adversarial cloud attack, DefenseNet training) takes an :class:`Objective`, so the same
attack runs on a classifier (``CLASSIFICATION``: cross-entropy, success = misclassified) and on a
salient-object-detection model (``SOD``: pixel-wise BCE on the saliency logits, success = the saliency map's
mean absolute error reaches ``SOD_SUCCESS_MAE``).

>>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
>>> CLASSIFICATION.success(logits, torch.tensor([0, 0])).tolist()
[False, True]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advbench.registry import Registry

#: An SOD prediction "fails" once half of its pixels are wrong on average.
SOD_SUCCESS_MAE = 0.5


@dataclass(frozen=True)
class Objective:
    """``loss(outputs, targets) -> (B,)`` (higher = worse for the victim) and ``success(outputs, targets) -> (B,)``."""

    name: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    success: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def _misclassified(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=1) != labels


def _bce(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, masks, reduction="none").flatten(1).mean(dim=1)


def _sod_broken(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return (logits.sigmoid() - masks).abs().flatten(1).mean(dim=1) >= SOD_SUCCESS_MAE


CLASSIFICATION = Objective("classification", _ce, _misclassified)
SOD = Objective("sod", _bce, _sod_broken)

#: Objective name -> objective (the multi-task heads are another registry: ``advbench.models.task_heads``).
OBJECTIVES: Registry[Objective] = Registry("objective")
OBJECTIVES.register("classification")(CLASSIFICATION)
OBJECTIVES.register("sod")(SOD)
