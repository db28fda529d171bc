"""Named warnings for signs of gradient masking, in the spirit of AutoAttack's checks.

Croce & Hein (ICML 2020) flag evaluations where gradients vanish or where a black-box attack finds
adversarial examples that the white-box attacks missed: both suggest the white-box numbers are an
over-estimate of robustness.  advbench raises them as warnings *and* records them in the run.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn


class SanityWarning(UserWarning):
    """Base class of the evaluation sanity warnings."""


class ZeroGradientWarning(SanityWarning):
    """The input gradient of the loss is exactly zero for some correctly classified samples."""


class BlackBoxStrongerWarning(SanityWarning):
    """A black-box attack broke samples that every white-box attack before it in the cascade missed."""


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of samples whose cross-entropy input gradient is exactly zero (model in eval mode)."""
    if x.shape[0] == 0:
        return 0.0
    training = model.training
    model.eval()
    try:
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y, reduction="sum")
            if not loss.requires_grad:  # e.g. an int8 model: no gradient reaches the input at all
                return 1.0
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        if grad is None:
            return 1.0
    finally:
        model.train(training)
    zero = grad.reshape(grad.shape[0], -1).abs().amax(dim=1) == 0
    return float(zero.float().mean())


def emit(kind: type[SanityWarning], message: str, sink: list[dict]) -> None:
    """Warn and append ``{'name', 'message'}`` to ``sink`` (the run's record of warnings)."""
    warnings.warn(message, kind, stacklevel=3)
    sink.append({"name": kind.__name__, "message": message})
