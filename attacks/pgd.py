"""Projected gradient descent on the ThreatModel geometry, and its one-step special case FGSM.

* PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
* FGSM: Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015 (for l2 this is
  the fast gradient method, one normalised-gradient step of length eps).
* PGD-CW: PGD on the Carlini & Wagner margin (Carlini & Wagner, S&P 2017) instead of cross-entropy.

One loop serves every norm: the step is ``threat.ascent_direction`` and the projection is the exact
``threat.project`` onto ball ∩ box.  With ``early_stop`` (the default) the start point is checked with
one forward pass, and a sample leaves the loop as soon as an iterate reaches the goal, so it costs no
further gradients; without it the last iterate is returned, as in the reference implementations.
"""

from __future__ import annotations

import torch

from advbench.attack import Attack, AttackContext, RawResult, register_attack
from advbench.errors import ConfigError
from advbench.losses import get_loss
from advbench.threat import parse_eps


@register_attack("pgd")
class PGD(Attack):
    """PGD with a random start, ``steps`` steps of ``step_size`` (default 2.5·eps/steps) on ``loss``."""

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float | str = 8 / 255,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        loss: str = "ce",
        kappa: float = 0.0,
        l1_sparsity: float = 0.95,
        targeted: bool = False,
        early_stop: bool = True,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, early_stop=early_stop)
        if int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        if step_size is not None and step_size <= 0:
            raise ConfigError(f"step_size must be > 0, got {step_size}")
        if not 0 <= l1_sparsity < 1:
            raise ConfigError(f"l1_sparsity must be in [0, 1), got {l1_sparsity}")
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else None  # None: 2.5 * eps / steps
        self._step = self.step_size if self.step_size is not None else self.threat.default_step_size(self.steps)
        self.random_start = bool(random_start)
        self.loss = loss
        self.kappa = float(kappa)
        self.l1_sparsity = float(l1_sparsity)
        self._loss_fn = get_loss(loss, self.kappa)

    def _attack(self, ctx: AttackContext, x: torch.Tensor) -> RawResult:
        threat = self.threat
        n = x.shape[0]
        x_out = x.clone()
        adv_pred = torch.empty(n, dtype=torch.long, device=x.device)
        first = torch.full((n,), -1, dtype=torch.long, device=x.device)
        trace = torch.full((self.steps, n), float("nan"), device=x.device)
        active = torch.arange(n, device=x.device)
        if self.early_stop:  # one forward at the clean point: samples already at the goal cost no gradient
            clean_logits = ctx.logits(x, active)
            hit = ctx.is_success(clean_logits, active)
            first[hit] = 0
            adv_pred[hit] = clean_logits.argmax(1)[hit]
            active = active[~hit]
        xc = x[active]
        xa = threat.random_init(xc, ctx.generator) if self.random_start else xc.clone()
        # linf: ball ∩ box is the box [max(x - eps, 0), min(x + eps, 1)], so a step is one fused add and one clamp
        # (exactly the generic sign step and projection, in two kernels instead of seven: on a GPU a small
        # model's PGD is bound by kernel launches)
        box = None
        if threat.norm == "linf":
            box = ((xc - threat.eps).clamp_(0.0, 1.0), (xc + threat.eps).clamp_(0.0, 1.0))
        for t in range(self.steps + 1):
            if active.numel() == 0:
                break
            idx = None if active.numel() == n else active  # no index bookkeeping while nobody has left
            if t == self.steps:
                logits = ctx.logits(xa, idx)
            else:
                logits, loss, grad = ctx.loss_and_grad(xa, idx, self._loss_fn)
                if idx is None:
                    trace[t] = loss
                else:
                    trace[t, active] = loss
            pred = logits.argmax(dim=1)
            labels = ctx.labels if idx is None else ctx.labels[active]
            hit = pred == labels if ctx.targeted else pred != labels
            if idx is None:
                first = torch.where(hit & (first < 0), t, first)
            else:
                first[active[hit & (first[active] < 0)]] = t
            if t == self.steps:
                adv_pred[active] = pred
                x_out[active] = xa
                break
            if self.early_stop and bool(hit.any()):
                done = active[hit]
                x_out[done] = xa[hit]
                adv_pred[done] = pred[hit]
                keep = ~hit
                active, xa, xc, grad = active[keep], xa[keep], xc[keep], grad[keep]
                if box is not None:
                    box = (box[0][keep], box[1][keep])
                if active.numel() == 0:
                    break
            if box is not None:
                xa = torch.clamp(torch.add(xa, grad.sign(), alpha=self._step), box[0], box[1])
            else:
                xa = threat.project(xa + self._step * threat.ascent_direction(grad, self.l1_sparsity, x_adv=xa), xc)
        return RawResult(x_adv=x_out, adv_pred=adv_pred, success_step=first, loss_trace=trace)


@register_attack("pgd-cw")
class PGDCW(PGD):
    """PGD on the C&W margin loss (``kappa`` is the confidence margin)."""

    def __init__(self, *, loss: str = "cw", **kwargs) -> None:
        super().__init__(loss=loss, **kwargs)


@register_attack("fgsm")
class FGSM(PGD):
    """One gradient step of length eps (Goodfellow et al. 2015); l2 gives the fast gradient method."""

    norms = ("linf", "l2")

    def __init__(
        self, *, norm: str = "linf", eps: float | str = 8 / 255, loss: str = "ce", kappa: float = 0.0,
        targeted: bool = False, early_stop: bool = True,
    ) -> None:
        step = max(parse_eps(eps), 1e-12)  # a zero budget still needs a positive (projected-away) step
        super().__init__(norm=norm, eps=eps, steps=1, step_size=step, random_start=False,
                         loss=loss, kappa=kappa, targeted=targeted, early_stop=early_stop)
