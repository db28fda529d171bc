"""Universal perturbation: one perturbation for a group of K inputs, each input a domain of the min-max
engine (Wang et al., NeurIPS 2021, "universal perturbation over multiple examples").  Every
``x_i + delta`` stays in [0,1]: the perturbation is projected onto the ball intersected with the
intersection of the inputs' boxes.

A batch of N inputs is split into N / k consecutive groups of ``k``; each group gets its own delta.
"""

from __future__ import annotations

import torch

from advbench.attack import AttackContext, register_attack
from advbench.attacks.multidomain import MultiDomainAttack, domain_success
from advbench.errors import ConfigError, InputError


class _UniversalDomains:
    def __init__(self, model, x: torch.Tensor, labels: torch.Tensor, k: int, attack) -> None:
        self.model, self.k, self.attack = model, k, attack
        self.groups = x.shape[0] // k
        self.x = x.reshape(self.groups, k, *x.shape[1:])
        self.labels = labels
        self.names = [f"input{i}" for i in range(k)]

    def evaluate(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = (self.x + delta[:, None]).reshape(-1, *self.x.shape[2:])
        logits = self.model(x_adv)
        losses = self.attack.domain_loss(logits, self.labels).reshape(self.groups, self.k)
        success = domain_success(logits, self.labels, self.attack.targeted).reshape(self.groups, self.k)
        return losses, success


class _UniversalBase(MultiDomainAttack):
    def __init__(self, *, k: int = 5, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(k) < 1:
            raise ConfigError(f"k (inputs per universal perturbation) must be >= 1, got {k}")
        self.k = int(k)

    def build(self, ctx: AttackContext, x: torch.Tensor):
        n = x.shape[0]
        if self.k > n:
            raise InputError(f"k={self.k} is larger than the data ({n} samples); lower --k or add samples")
        if n % self.k:
            raise InputError(f"{n} samples do not split into groups of k={self.k}; pass a multiple of k")
        domains = _UniversalDomains(ctx.model, x, ctx.labels, self.k, self)
        lo = (-domains.x).amax(dim=1)  # every member's box must hold
        hi = (1 - domains.x).amin(dim=1)

        def project(delta: torch.Tensor) -> torch.Tensor:
            return self.threat.project_delta_bounds(delta, lo, hi)

        def to_x_adv(delta: torch.Tensor) -> torch.Tensor:
            return (domains.x + delta[:, None]).reshape(x.shape).clamp(0, 1)

        return domains, torch.zeros_like(lo), project, to_x_adv


@register_attack("minmax-universal")
class MinMaxUniversal(_UniversalBase):
    """APGDA over K inputs sharing one perturbation."""


@register_attack("avg-universal")
class AvgUniversal(_UniversalBase):
    """The averaging baseline for universal perturbations (weights fixed to 1/K)."""

    averaging = True
