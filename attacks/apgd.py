"""Auto-PGD, native: step-size-free PGD with momentum (Croce & Hein, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", ICML 2020).

Per sample, the step size starts at 2·eps and is halved at checkpoints ``w_j`` (``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` of the budget) when fewer than ``rho`` of the steps
since the last checkpoint raised the loss, or when the step was not halved last time and the best loss
did not improve; the iterate then restarts from the best point.  The update is
``z = P(x_k + eta·s(g))``, ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))`` with
``alpha = 0.75`` (the first step has no momentum).

Unlike torchattacks' APGD this one has a targeted mode (targeted CE or targeted DLR), per-sample early
stop and the exact l2 ball ∩ box projection.  Samples that never succeed return their best-loss point.
"""

from __future__ import annotations

import math

import torch

from advbench.attack import Attack, AttackContext, RawResult, register_attack
from advbench.errors import ConfigError
from advbench.losses import get_loss


def checkpoints(steps: int) -> list[int]:
    """Iteration indices at which the step size may be halved (``ceil(p_j · steps)``, as in AutoAttack).

    >>> checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    fractions = [0.0, 0.22]
    while fractions[-1] < 1:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(f * steps, 6)) for f in fractions[1:]} & set(range(1, steps)))


@register_attack("apgd")
class APGD(Attack):
    """Native APGD on ``loss`` ('ce' or 'dlr'), untargeted or targeted, linf or l2."""

    norms = ("linf", "l2")

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float | str = 8 / 255,
        steps: int = 100,
        loss: str = "ce",
        rho: float = 0.75,
        momentum: float = 0.75,
        random_start: bool = True,
        targeted: bool = False,
        early_stop: bool = True,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, early_stop=early_stop)
        if int(steps) < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        if loss not in ("ce", "dlr"):
            raise ConfigError(f"apgd loss must be 'ce' or 'dlr', got '{loss}'")
        if not 0 < rho < 1 or not 0 < momentum <= 1:
            raise ConfigError(f"apgd needs 0 < rho < 1 and 0 < momentum <= 1; got rho={rho}, momentum={momentum}")
        self.steps = int(steps)
        self.loss = loss
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.random_start = bool(random_start)
        self._loss_fn = get_loss(loss)

    def _attack(self, ctx: AttackContext, x: torch.Tensor) -> RawResult:
        tm, n, dev = self.threat, x.shape[0], x.device
        x_out = x.clone()
        first = torch.full((n,), -1, dtype=torch.long, device=dev)
        adv_pred = torch.empty(n, dtype=torch.long, device=dev)
        trace = torch.full((self.steps + 1, n), float("nan"), device=dev)
        active = torch.arange(n, device=dev)
        if self.early_stop:
            clean = ctx.logits(x, active)
            hit = ctx.is_success(clean, active)
            first[hit], adv_pred[hit] = 0, clean.argmax(1)[hit]
            active = active[~hit]
        if active.numel() == 0:
            return RawResult(x_adv=x_out, adv_pred=adv_pred, success_step=first, loss_trace=trace)

        # per-sample state for the samples still being attacked (index i of these == active[i])
        xc = x[active]
        x_cur = tm.random_init(xc, ctx.generator) if self.random_start else xc.clone()
        logits, loss, grad = ctx.loss_and_grad(x_cur, active, self._loss_fn)
        trace[0, active] = loss
        state = {
            "xc": xc, "x": x_cur, "x_prev": x_cur.clone(), "grad": grad, "loss": loss,
            "x_best": x_cur.clone(), "grad_best": grad.clone(), "loss_best": loss.clone(),
            "eta": torch.full((active.numel(),), 2 * tm.eps, device=dev),
            "increases": torch.zeros(active.numel(), device=dev),
            "best_at_ckpt": loss.clone(), "halved_last": torch.zeros(active.numel(), dtype=torch.bool, device=dev),
            "pred": logits.argmax(1),
        }
        ckpts, last_ckpt = checkpoints(self.steps), 0
        active, state = self._retire(ctx, active, state, logits, 0, first, adv_pred, x_out)
        view = (-1,) + (1,) * (x.ndim - 1)
        for k in range(self.steps):
            if active.numel() == 0:
                break
            s = state
            z = tm.project(s["x"] + s["eta"].view(view) * tm.ascent_direction(s["grad"]), s["xc"])
            if k > 0:
                z = tm.project(s["x"] + self.momentum * (z - s["x"]) + (1 - self.momentum) * (s["x"] - s["x_prev"]),
                               s["xc"])
            s["x_prev"] = s["x"]
            logits, loss, grad = ctx.loss_and_grad(z, active, self._loss_fn)
            trace[k + 1, active] = loss
            s["increases"] += (loss > s["loss"]).float()
            s["x"], s["grad"], s["loss"], s["pred"] = z, grad, loss, logits.argmax(1)
            better = loss > s["loss_best"]
            s["x_best"][better], s["grad_best"][better], s["loss_best"][better] = z[better], grad[better], loss[better]
            # record successes at this iterate before a checkpoint may reset it to the best-loss point
            active, s = self._retire(ctx, active, s, logits, k + 1, first, adv_pred, x_out)
            state = s
            if active.numel() == 0:
                break
            if k + 1 in ckpts:
                window = k + 1 - last_ckpt
                stalled = ~s["halved_last"] & (s["loss_best"] <= s["best_at_ckpt"])
                halve = (s["increases"] < self.rho * window) | stalled
                s["eta"][halve] /= 2
                s["x"][halve], s["grad"][halve] = s["x_best"][halve], s["grad_best"][halve]
                s["x_prev"][halve] = s["x_best"][halve]
                s["halved_last"], s["best_at_ckpt"] = halve, s["loss_best"].clone()
                s["increases"] = torch.zeros_like(s["increases"])
                last_ckpt = k + 1
        # samples that never reached the goal return their best-loss point (found adversarial points are kept)
        never = active[first[active] < 0]
        if never.numel():
            best = state["x_best"][first[active] < 0]
            x_out[never] = best
            adv_pred[never] = ctx.logits(best, never).argmax(1)
        return RawResult(x_adv=x_out, adv_pred=adv_pred, success_step=first, loss_trace=trace)

    def _retire(self, ctx, active, state, logits, step, first, adv_pred, x_out):
        """Record samples whose current iterate meets the goal; with early stop, drop them from the state."""
        hit = ctx.is_success(logits, active)
        new = hit & (first[active] < 0)
        first[active[new]] = step
        if not self.early_stop or not bool(hit.any()):
            if bool(new.any()) and not self.early_stop:  # keep the first adversarial point found
                x_out[active[new]], adv_pred[active[new]] = state["x"][new], state["pred"][new]
            return active, state
        done = active[hit]
        x_out[done], adv_pred[done] = state["x"][hit], state["pred"][hit]
        keep = ~hit
        return active[keep], {k: v[keep] for k, v in state.items()}
