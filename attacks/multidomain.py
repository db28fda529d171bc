"""Shared machinery of the min-max recipes: hyperparameters, the per-domain loss, the engine call and
the multi-domain metrics (ASR_all, ASR_avg, per-domain ASR, mean learned weight per domain).

Every recipe has a min-max version and an averaging twin (``w`` fixed to 1/K) that runs through the
same :class:`advbench.minmax.APGDA` code path (Wang et al., NeurIPS 2021).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from advbench.attack import Attack, AttackContext, AttackOutput, RawResult
from advbench.errors import ConfigError
from advbench.losses import cw_margin, cw_targeted_margin
from advbench.minmax import APGDA, DomainSet

# Published inverse step sizes (alpha, beta) for MNIST by norm (Wang, Zhang, Liu et al., NeurIPS 2021).
DEFAULT_STEPS = {"linf": (4.0, 50.0), "l2": (10.0, 100.0), "l1": (4.0, 100.0), "l0": (1.0, 100.0)}


def domain_loss(logits: torch.Tensor, labels: torch.Tensor, *, loss: str, kappa: float, targeted: bool):
    """Per-sample loss the attacker *minimises* in one domain: the C&W margin (default) or -CE."""
    if loss == "cw":
        return cw_targeted_margin(logits, labels, kappa) if targeted else cw_margin(logits, labels, kappa)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    return ce if targeted else -ce


def domain_success(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = logits.argmax(dim=1)
    return pred == labels if targeted else pred != labels


class MultiDomainAttack(Attack):
    """Base of the min-max recipes.  ``averaging`` marks the fixed-weight twin."""

    averaging: ClassVar[bool] = False
    multi_domain: ClassVar[bool] = True

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float | str = 0.2,
        steps: int = 50,
        alpha: float | None = None,
        beta: float | None = None,
        gamma: float = 4.0,
        alpha_decay: float = 1.0,
        beta_decay: float = 1.0,
        loss: str = "cw",
        kappa: float = 50.0,
        random_start: bool = False,
        targeted: bool = False,
        early_stop: bool = True,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, early_stop=early_stop)
        if loss not in ("cw", "ce"):
            raise ConfigError(f"loss must be 'cw' or 'ce', got '{loss}'")
        if kappa < 0:
            raise ConfigError(f"kappa must be >= 0, got {kappa}")
        default_alpha, default_beta = DEFAULT_STEPS[self.norm]
        self.steps = int(steps)
        self.alpha = float(alpha) if alpha is not None else default_alpha
        self.beta = float(beta) if beta is not None else default_beta
        self.gamma = float(gamma)
        self.alpha_decay, self.beta_decay = float(alpha_decay), float(beta_decay)
        self.loss, self.kappa, self.random_start = loss, float(kappa), bool(random_start)
        self.engine = APGDA(steps=self.steps, alpha=self.alpha, beta=self.beta, gamma=self.gamma,
                            alpha_decay=self.alpha_decay, beta_decay=self.beta_decay,
                            fixed_weights=self.averaging, early_stop=self.early_stop)

    def domain_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return domain_loss(logits, labels, loss=self.loss, kappa=self.kappa, targeted=self.targeted)

    # -- subclasses -------------------------------------------------------------------------------------
    def build(self, ctx: AttackContext, x: torch.Tensor) -> tuple[DomainSet, torch.Tensor, Any, Any]:
        """Return the domain set, the starting perturbation, its projection and a map to x_adv."""
        raise NotImplementedError

    def _attack(self, ctx: AttackContext, x: torch.Tensor) -> RawResult:
        domains, delta0, project, to_x_adv = self.build(ctx, x)
        if self.random_start:
            delta0 = project(self.threat.random_init(torch.zeros_like(delta0) + 0.5, ctx.generator) - 0.5)
        result = self.engine.run(domains, delta0, project, self.threat.ascent_direction)
        k = len(domains.names)
        per_sample = x.shape[0] // delta0.shape[0]
        ctx.n_gradients += result.gradient_calls * k // per_sample
        ctx.n_queries += result.forward_calls * k // per_sample
        x_adv = to_x_adv(result.delta)
        with torch.no_grad():
            _, success = domains.evaluate(result.delta)
        return RawResult(
            x_adv=x_adv,
            adv_pred=ctx.logits(x_adv).argmax(dim=1),  # the model's (for an ensemble, the mean) prediction
            weights=result.weights,
            weight_trace=result.weight_trace,
            loss_trace=result.loss_trace,
            success_step=result.first_success,
            extras={"domain_names": list(domains.names), "domain_success": success},
        )

    def _finish(self, ctx, raw: RawResult, target) -> AttackOutput:
        """Success means every domain is fooled at once (the ASR_all criterion), per input."""
        all_domains = raw.extras["domain_success"].all(dim=1)
        repeats = ctx.x.shape[0] // all_domains.shape[0]  # universal: one row per group of k inputs
        raw.success_step = raw.success_step.repeat_interleave(repeats)
        out = super()._finish(ctx, raw, target)
        out.success = all_domains.repeat_interleave(repeats)
        out.success_step = torch.where(out.success, raw.success_step, -1)
        return out


def multidomain_metrics(outputs: list[AttackOutput]) -> dict[str, Any]:
    """ASR_all (every domain at once), ASR_avg, per-domain ASR and mean learned weight per domain."""
    names = outputs[0].extras["domain_names"]
    success = torch.cat([o.extras["domain_success"] for o in outputs]).float()
    weights = torch.cat([o.weights for o in outputs]).float()
    trace = torch.cat([o.weight_trace for o in outputs], dim=1).float().mean(dim=1)  # (steps+1, K)
    return {
        "asr_all": float(success.all(dim=1).float().mean()) if success.numel() else 0.0,
        "asr_avg": float(success.mean()) if success.numel() else 0.0,
        "per_domain": {n: float(success[:, i].mean()) for i, n in enumerate(names)},
        "weights": {n: float(weights[:, i].mean()) for i, n in enumerate(names)},
        "weight_trace": trace.tolist(),
        "n_rows": int(success.shape[0]),
    }
