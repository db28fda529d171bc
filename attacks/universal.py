"""Universal perturbation: one perturbation for a group of K inputs, each input a domain of the min-max
engine (Wang et al., NeurIPS 2021, "universal perturbation over multiple examples").  Every
``x_i + delta`` stays in [0,1]: the perturbation is projected onto the ball intersected with the
intersection of the inputs' boxes.

A batch of N inputs is split into N / k consecutive groups of ``k``; each group gets its own delta.
:func:`stream_universal` instead finds one delta for a whole data set, streamed in batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advbench.attack import AttackContext, generator_for, register_attack
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


@dataclass
class StreamedUniversal:
    """One perturbation for a whole data set, and the learned weight of every input."""

    delta: torch.Tensor  # (1, C, H, W)
    weights: torch.Tensor  # (N,) on the simplex
    success: torch.Tensor  # (N,) per input at the final delta
    loss_history: list[float]

    @property
    def asr(self) -> float:
        return float(self.success.float().mean())


def stream_universal(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "linf",
    eps: float | str = 0.2,
    epochs: int = 5,
    batch_size: int = 128,
    alpha: float | None = None,
    beta: float | None = None,
    gamma: float = 4.0,
    kappa: float = 50.0,
    averaging: bool = False,
    generator: torch.Generator | None = None,
) -> StreamedUniversal:
    """A universal perturbation over a whole data set, streamed in batches (a stochastic APGDA).

    Every input is a domain with its own weight; each batch takes a delta step on the weighted C&W margin
    of its inputs and an ascent step on their weights, after which the full weight vector is projected
    onto the simplex.  ``x_i + delta`` stays in [0,1] for every input: delta lives in the ball
    intersected with all the inputs' boxes.  ``averaging=True`` keeps the weights uniform.
    """
    from advbench.attacks.multidomain import DEFAULT_STEPS, domain_loss, domain_success
    from advbench.minmax import project_simplex
    from advbench.threat import ThreatModel

    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if x.shape[0] < 1:
        raise InputError("stream_universal needs at least one input")
    threat = ThreatModel(norm, eps)
    default_alpha, default_beta = DEFAULT_STEPS[threat.norm]
    step, w_step = 1.0 / (alpha or default_alpha), 1.0 / (beta or default_beta)
    n = x.shape[0]
    lo, hi = (-x).amax(dim=0, keepdim=True), (1 - x).amin(dim=0, keepdim=True)
    delta = torch.zeros_like(lo)
    w = torch.full((n,), 1.0 / n, device=x.device)
    generator = generator_for(x.device, generator)
    history = []
    training = model.training
    model.eval()
    try:
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator, device=x.device)
            for b in range(0, n, batch_size):
                idx = order[b : b + batch_size]
                leaf = delta.detach().requires_grad_(True)
                with torch.enable_grad():
                    losses = domain_loss(model(x[idx] + leaf), y[idx], loss="cw", kappa=kappa, targeted=False)
                    (grad,) = torch.autograd.grad((w[idx] * losses).sum(), leaf)
                delta = threat.project_delta_bounds(delta - step * threat.ascent_direction(grad), lo, hi)
                if not averaging:
                    w = w.clone()
                    w[idx] = w[idx] + w_step * (losses.detach() - gamma * (w[idx] - 1.0 / n))
                    w = project_simplex(w[None])[0]
                history.append(float(losses.detach().mean()))
        with torch.no_grad():
            success = torch.cat([domain_success(model(x[b : b + batch_size] + delta), y[b : b + batch_size], False)
                                 for b in range(0, n, batch_size)])
    finally:
        model.train(training)
    return StreamedUniversal(delta=delta.detach(), weights=w, success=success, loss_history=history)
