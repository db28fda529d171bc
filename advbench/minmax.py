"""The min-max multi-domain attack engine (APGDA).

Wang, Zhang, Liu et al., "Adversarial Attack Generation Empowered by Min-Max Optimization", NeurIPS
2021 (arXiv 1906.03563).  Given K *domains*, each with a loss ``F_i`` of one shared perturbation,
APGDA solves

    min over delta in X, max over w in the simplex P:  sum_i w_i F_i(delta) - (gamma/2) ||w - 1/K||^2

by alternating projected steps (Wang, Zhang, Liu et al., NeurIPS 2021):

1. ``delta <- proj_X(delta - (1/alpha) · s(sum_i w_i grad F_i(delta)))`` with ``s`` the steepest-descent
   direction of the threat model's norm (sign for linf, normalised gradient for l2);
2. ``w <- proj_P(w + (1/beta) · (F(delta_new) - gamma (w - 1/K)))``, using the losses at the *new* delta.

``alpha`` and ``beta`` are the paper's inverse step sizes, so the published tables can be typed in.
The weights are kept per sample, shape (batch, K).  ``gamma = inf`` (or ``fixed_weights=True``) keeps
``w = 1/K``: the averaging (EOT-style) baseline through the same code path.

The engine knows nothing about what a domain is.  A :class:`DomainSet` maps a perturbation batch to
per-domain losses and successes; recipes (ensembles of models, universal perturbations over inputs,
transformations, and later altitude groups, cloud samples or tasks) only implement that protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from advbench.errors import ConfigError


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean projection of each row of ``v`` (..., K) onto the probability simplex.

    Sort-based algorithm of Duchi, Shalev-Shwartz, Singer & Chandra (ICML 2008): with ``u`` sorted in
    decreasing order, ``rho = max{j : u_j - (sum_{i<=j} u_i - 1)/j > 0}`` and
    ``theta = (sum_{i<=rho} u_i - 1)/rho``, the projection is ``max(v - theta, 0)``.

    >>> project_simplex(torch.tensor([[0.5, 0.5, 0.5], [2.0, 0.0, -1.0]]))
    tensor([[0.3333, 0.3333, 0.3333],
            [1.0000, 0.0000, 0.0000]])
    """
    k = v.shape[-1]
    u = v.sort(dim=-1, descending=True).values
    cssv = u.cumsum(dim=-1) - 1
    ks = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    cond = u - cssv / ks > 0
    rho = cond.to(v.dtype).mul(ks).amax(dim=-1, keepdim=True)  # the last index where cond holds
    theta = cssv.gather(-1, rho.long() - 1) / rho
    return (v - theta).clamp_min(0)


def project_multipliers(w: torch.Tensor, fixed: int = 1) -> torch.Tensor:
    """Dual-ascent projection for constrained attacks: the first ``fixed`` weights stay 1 (the objective), the
    others are Lagrange multipliers clipped at 0 (Boyd & Vandenberghe, *Convex Optimization*, §5).

    >>> project_multipliers(torch.tensor([[0.7, -0.2, 0.3]]))
    tensor([[1.0000, 0.0000, 0.3000]])
    """
    return torch.cat([torch.ones_like(w[:, :fixed]), w[:, fixed:].clamp_min(0)], dim=1)


class DomainSet(Protocol):
    """K domains over one perturbation batch.

    ``evaluate(delta)`` returns ``(losses, success)``, both (batch, K): the loss each domain assigns to the
    perturbation (to be *minimised* by the attacker, differentiable w.r.t. ``delta``) and whether the
    attack already succeeds in that domain.  ``names`` labels the K domains.
    """

    names: Sequence[str]

    def evaluate(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class MinMaxResult:
    """The final perturbation, the learned weights and their trace, losses and per-domain success."""

    delta: torch.Tensor
    weights: torch.Tensor  # (batch, K)
    weight_trace: torch.Tensor  # (steps + 1, batch, K)
    loss_trace: torch.Tensor  # (steps + 1, batch, K)
    success: torch.Tensor  # (batch, K) at the returned delta
    losses: torch.Tensor  # (batch, K) at the returned delta
    first_success: torch.Tensor  # (batch,) first step at which every domain succeeded, -1 if never
    gradient_calls: int
    forward_calls: int


@dataclass(frozen=True)
class APGDA:
    """Alternating projected gradient descent (delta) / ascent (w) on the regularised min-max problem.

    ``alpha_decay`` / ``beta_decay`` multiply the step sizes ``1/alpha`` and ``1/beta`` after each step.
    ``early_stop`` freezes a sample's perturbation once every domain succeeds.
    """

    steps: int = 50
    alpha: float = 4.0
    beta: float = 50.0
    gamma: float = 4.0
    alpha_decay: float = 1.0
    beta_decay: float = 1.0
    fixed_weights: bool = False
    early_stop: bool = False
    #: Where the weights live: ``None`` = the probability simplex (min-max); a callable maps a stepped ``w``
    #: back into its set, e.g. :func:`project_multipliers` for non-negative Lagrange multipliers.
    weight_projection: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: The weights at step 0, ``(batch, K) -> tensor``; ``None`` = uniform ``1/K``.
    initial_weights: Callable[[int, int], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if not self.alpha > 0 or not self.beta > 0:
            raise ConfigError(f"alpha and beta (inverse step sizes) must be > 0; got {self.alpha}, {self.beta}")
        if not self.gamma >= 0:
            raise ConfigError(f"gamma must be >= 0 (inf gives the averaging baseline), got {self.gamma}")
        if not 0 < self.alpha_decay <= 1 or not 0 < self.beta_decay <= 1:
            raise ConfigError("alpha_decay and beta_decay must be in (0, 1]")

    @property
    def averaging(self) -> bool:
        return self.fixed_weights or math.isinf(self.gamma)

    def update_weights(self, w: torch.Tensor, losses: torch.Tensor, beta_step: float) -> torch.Tensor:
        """One projected ascent step on w: ``proj_P(w + beta_step (F - gamma (w - 1/K)))``."""
        if self.averaging:
            return w
        k = w.shape[-1]
        stepped = w + beta_step * (losses - self.gamma * (w - 1.0 / k))
        return project_simplex(stepped) if self.weight_projection is None else self.weight_projection(stepped)

    def run(
        self,
        domains: DomainSet,
        delta: torch.Tensor,
        project: Callable[[torch.Tensor], torch.Tensor],
        direction: Callable[[torch.Tensor], torch.Tensor],
    ) -> MinMaxResult:
        """Run APGDA from ``delta`` (already feasible); ``project`` maps a perturbation into X and
        ``direction`` gives the unit steepest-ascent direction of a gradient for the threat norm."""
        batch = delta.shape[0]
        k = len(domains.names)
        if k < 1:
            raise ConfigError("the min-max engine needs at least one domain")
        if self.initial_weights is None:
            w = torch.full((batch, k), 1.0 / k, device=delta.device, dtype=delta.dtype)
        else:
            w = self.initial_weights(batch, k).to(device=delta.device, dtype=delta.dtype)
        alpha_step, beta_step = 1.0 / self.alpha, 1.0 / self.beta
        w_trace = [w.clone()]
        leaf, losses, success = self._evaluate(domains, delta)
        grad = self._grad(losses, leaf, w)
        l_trace = [losses.detach().clone()]
        frozen = torch.zeros(batch, dtype=torch.bool, device=delta.device)
        view = (-1,) + (1,) * (delta.ndim - 1)
        grad_calls = fwd_calls = 1
        first = torch.where(success.all(dim=1), 0, -1)
        for step in range(1, self.steps + 1):
            if self.early_stop:
                frozen = frozen | success.all(dim=1)
                if bool(frozen.all()):
                    break
            stepped = project(delta - alpha_step * direction(grad))
            delta = torch.where(frozen.view(view), delta, stepped) if self.early_stop else stepped
            leaf, losses, success = self._evaluate(domains, delta)
            fwd_calls += 1
            first = torch.where((first < 0) & success.all(dim=1), step, first)
            w_new = self.update_weights(w, losses.detach(), beta_step)
            w = torch.where(frozen[:, None], w, w_new) if self.early_stop else w_new
            grad = self._grad(losses, leaf, w)
            grad_calls += 1
            alpha_step *= self.alpha_decay
            beta_step *= self.beta_decay
            w_trace.append(w.clone())
            l_trace.append(losses.detach().clone())
        while len(w_trace) < self.steps + 1:  # stopped early: frozen weights and losses stay as they are
            w_trace.append(w_trace[-1])
            l_trace.append(l_trace[-1])
        return MinMaxResult(delta=delta.detach(), weights=w, weight_trace=torch.stack(w_trace),
                            loss_trace=torch.stack(l_trace), success=success, losses=losses.detach(),
                            first_success=first, gradient_calls=grad_calls, forward_calls=fwd_calls)

    @staticmethod
    def _evaluate(domains: DomainSet, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Domain losses with a graph back to a fresh leaf copy of ``delta``."""
        leaf = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            losses, success = domains.evaluate(leaf)
        return leaf, losses, success.detach()

    @staticmethod
    def _grad(losses: torch.Tensor, leaf: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Gradient of the weighted loss ``sum_i w_i F_i`` (w held fixed) w.r.t. the perturbation."""
        (grad,) = torch.autograd.grad((w.detach() * losses).sum(), leaf)
        return grad
