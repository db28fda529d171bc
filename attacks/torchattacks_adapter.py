"""torchattacks attacks behind the advbench protocol (registry, budget checks, cost accounting).

Kim, "Torchattacks: A PyTorch Repository for Adversarial Attacks", arXiv 2010.01950.  The wrapped
methods are:

* APGD-CE / APGD-DLR and APGD-T: Croce & Hein, "Reliable evaluation of adversarial robustness with an
  ensemble of diverse parameter-free attacks", ICML 2020 (AutoAttack is their cascade).
* FAB / FAB-T: Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
  attack", ICML 2020.
* Square: Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via
  random search", ECCV 2020.
* CW: Carlini & Wagner, "Towards evaluating the robustness of neural networks", S&P 2017.
* DeepFool: Moosavi-Dezfooli et al., CVPR 2016.

What the adapter adds, and what it deliberately leaves out of torchattacks' habits:

* The model comes at call time; torchattacks' object is built per call around it.
* Randomness: torchattacks draws from torch's *global* generator.  The adapter derives a seed from the
  caller's explicit ``torch.Generator`` and runs the attack inside ``torch.random.fork_rng``, so the
  global state is restored afterwards and the same generator seed gives the same result.
* Early stop: samples that already meet the goal are not passed to torchattacks (they cost one query).
* Minimal-norm attacks (CW, DeepFool, FAB) may return points outside the budget; they are projected
  exactly onto ball ∩ box, and success is judged on the projected point.
* Cost: torchattacks does not report per-sample cost, so forward passes (queries) and forward passes
  with an input gradient (gradients) are counted by a wrapper around the model and spread evenly over
  the attacked samples.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, ClassVar

import torch
from torch import nn

from advbench.attack import Attack, AttackContext, RawResult, register_attack
from advbench.errors import ConfigError

_TA_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}


class _CountingModel(nn.Module):
    """Counts forward passes, and forward passes that will be differentiated w.r.t. the input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.queries = 0
        self.gradients = 0
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        if torch.is_grad_enabled() and x.requires_grad:
            self.gradients += x.shape[0]
        return self.model(x)


def spread_over_stages(total: int, idx: torch.Tensor, counts: torch.Tensor) -> None:
    """Add ``total`` to ``counts[idx]`` as evenly as integers allow."""
    n = idx.numel()
    if n == 0 or total == 0:
        return
    share = torch.full((n,), total // n, dtype=counts.dtype, device=counts.device)
    share[: total % n] += 1
    counts[idx] += share


class TorchattacksAttack(Attack):
    """Base of the adapters: subclasses name the torchattacks class and its keyword arguments."""

    minimal_norm: ClassVar[bool] = False

    def _make(self, model: nn.Module, n_classes: int, seed: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _targeted(self, ctx: AttackContext, x: torch.Tensor) -> RawResult | None:
        """The targeted attack for methods torchattacks implements untargeted only (None: use torchattacks)."""
        return None

    def _attack(self, ctx: AttackContext, x: torch.Tensor) -> RawResult:
        if self.targeted:
            own = self._targeted(ctx, x)
            if own is not None:
                return own
        n = x.shape[0]
        x_out = x.clone()
        first = torch.full((n,), -1, dtype=torch.long, device=x.device)
        active = torch.arange(n, device=x.device)
        if self.early_stop:
            logits = ctx.logits(x)
            hit = ctx.is_success(logits)
            first[hit] = 0
            active = active[~hit]
            if active.numel() == 0:
                return RawResult(x_adv=x_out, adv_pred=logits.argmax(1), success_step=first)
            n_classes = logits.shape[1]
        else:
            n_classes = ctx.logits(x[:1], active[:1]).shape[1]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator, device=ctx.generator.device))
        counter = _CountingModel(ctx.model).eval()  # torchattacks restores the wrapper's mode on the victim
        devices = [x.device] if x.device.type == "cuda" else []
        # torchattacks prints to stdout when the model has no parameters to read a device from (an int8 model);
        # stdout belongs to --json, so its chatter goes to stderr
        with torch.random.fork_rng(devices=devices), contextlib.redirect_stdout(sys.stderr):
            torch.manual_seed(seed)
            attack = self._make(counter, n_classes, seed)
            if self.targeted:
                attack.set_mode_targeted_by_label(quiet=True)
            adv = attack(x[active], ctx.labels[active]).detach()
        spread_over_stages(counter.queries, active, ctx.n_queries)
        spread_over_stages(counter.gradients, active, ctx.n_gradients)
        x_out[active] = self.threat.project(adv.to(x.dtype), x[active])
        return RawResult(x_adv=x_out, success_step=torch.where(first == 0, first, torch.full_like(first, 1)))


def _positive_int(name: str, value: int) -> int:
    if int(value) < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")
    return int(value)


@register_attack("ta-pgd")
class TorchattacksPGD(TorchattacksAttack):
    """torchattacks' PGD (linf) / PGDL2 (l2): the reference the native ``pgd`` is tested against."""

    norms = ("linf", "l2")

    def __init__(self, *, norm: str = "linf", eps: float | str = 8 / 255, steps: int = 10,
                 step_size: float | None = None, random_start: bool = True, targeted: bool = False,
                 early_stop: bool = True) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, early_stop=early_stop)
        self.steps = _positive_int("steps", steps)
        self.step_size = float(step_size) if step_size is not None else None  # None: 2.5 * eps / steps
        self._step = self.step_size if self.step_size is not None else self.threat.default_step_size(self.steps)
        self.random_start = bool(random_start)

    def _make(self, model, n_classes, seed):
        import torchattacks

        cls = torchattacks.PGD if self.norm == "linf" else torchattacks.PGDL2
        return cls(model, eps=self.eps, alpha=self._step, steps=self.steps, random_start=self.random_start)


class _APGDBase(TorchattacksAttack):
    norms = ("linf", "l2")

    def __init__(self, *, norm: str = "linf", eps: float | str = 8 / 255, steps: int = 100,
                 n_restarts: int = 1, rho: float = 0.75, targeted: bool = False, early_stop: bool = True) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, early_stop=early_stop)
        self.steps = _positive_int("steps", steps)
        self.n_restarts = _positive_int("n_restarts", n_restarts)
        if not 0 < rho < 1:
            raise ConfigError(f"rho must be in (0, 1), got {rho}")
        self.rho = float(rho)


@register_attack("apgd-ce")
class APGDCE(_APGDBase):
    """APGD on cross-entropy (Croce & Hein 2020).  torchattacks' APGD is untargeted only, so the targeted
    mode runs advbench's native APGD (same algorithm) with the targeted loss."""

    _loss = "ce"

    def _targeted(self, ctx, x):
        return native_apgd(self, self._loss)._attack(ctx, x)

    def _make(self, model, n_classes, seed):
        import torchattacks

        return torchattacks.APGD(model, norm=_TA_NORM[self.norm], eps=self.eps, steps=self.steps,
                                 n_restarts=self.n_restarts, seed=seed, loss=self._loss, rho=self.rho)


@register_attack("apgd-dlr")
class APGDDLR(APGDCE):
    """APGD on the difference-of-logits-ratio loss (Croce & Hein 2020)."""

    _loss = "dlr"


@register_attack("apgd-t")
class APGDT(_APGDBase):
    """Targeted APGD on the DLR loss over the top other classes, for an untargeted goal.  With
    ``targeted=True`` the given (or random) target is the only one: native APGD on the targeted DLR loss."""

    def _targeted(self, ctx, x):
        return native_apgd(self, "dlr")._attack(ctx, x)

    def _make(self, model, n_classes, seed):
        import torchattacks

        return torchattacks.APGDT(model, norm=_TA_NORM[self.norm], eps=self.eps, steps=self.steps,
                                  n_restarts=self.n_restarts, seed=seed, rho=self.rho, n_classes=n_classes)


@register_attack("fab")
class FAB(TorchattacksAttack):
    """FAB, a minimal-norm white-box attack (Croce & Hein 2020); result projected onto the budget."""

    norms = ("linf", "l2")  # torchattacks' FAB has no working L1 branch (its restart loop never sets `res`)
    minimal_norm = True
    _multi_targeted = False

    def __init__(self, *, norm: str = "linf", eps: float | str = 8 / 255, steps: int = 100, n_restarts: int = 1,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, targeted: bool = False,
                 early_stop: bool = True) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, early_stop=early_stop)
        self.steps = _positive_int("steps", steps)
        self.n_restarts = _positive_int("n_restarts", n_restarts)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)

    def _make(self, model, n_classes, seed):
        import torchattacks

        return torchattacks.FAB(model, norm=_TA_NORM[self.norm], eps=self.eps, steps=self.steps,
                                n_restarts=self.n_restarts, alpha_max=self.alpha_max, eta=self.eta,
                                beta=self.beta, seed=seed, multi_targeted=self._multi_targeted,
                                n_classes=n_classes)


    def _targeted(self, ctx, x):
        """torchattacks' FAB cannot aim at a given class, so for each target class t it runs FAB's untargeted
        minimal-norm search on the two-logit view ``[max_{j != t} Z_j, Z_t]`` with label 0: crossing that
        boundary is exactly reaching class t.  Samples are grouped by target."""
        import torchattacks

        x_out = x.clone()
        counter = _CountingModel(ctx.model).eval()
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator, device=ctx.generator.device))
        devices = [x.device] if x.device.type == "cuda" else []
        for target in ctx.labels.unique().tolist():
            idx = (ctx.labels == target).nonzero().flatten()
            view = _TargetVsRest(counter, int(target)).eval()
            with torch.random.fork_rng(devices=devices), contextlib.redirect_stdout(sys.stderr):
                torch.manual_seed(seed)
                fab = torchattacks.FAB(view, norm=_TA_NORM[self.norm], eps=self.eps, steps=self.steps,
                                       n_restarts=self.n_restarts, alpha_max=self.alpha_max, eta=self.eta,
                                       beta=self.beta, seed=seed, multi_targeted=False, n_classes=2)
                adv = fab(x[idx], torch.zeros_like(idx)).detach()
            x_out[idx] = self.threat.project(adv.to(x.dtype), x[idx])
        all_idx = torch.arange(x.shape[0], device=x.device)
        spread_over_stages(counter.queries, all_idx, ctx.n_queries)
        spread_over_stages(counter.gradients, all_idx, ctx.n_gradients)
        return RawResult(x_adv=x_out)


class _TargetVsRest(nn.Module):
    """Two logits per sample: the best class other than ``target``, and ``target``."""

    def __init__(self, model: nn.Module, target: int) -> None:
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        is_target = torch.zeros(z.shape[1], dtype=torch.bool, device=z.device)
        is_target[self.target] = True
        others = z.masked_fill(is_target, float("-inf")).amax(dim=1)
        return torch.stack([others, z[:, self.target]], dim=1)


@register_attack("fab-t")
class FABT(FAB):
    """FAB run against each of the top other classes in turn (multi-targeted), for an untargeted goal.
    With ``targeted=True`` it aims at the given (or random) target (see :meth:`FAB._targeted`)."""

    _multi_targeted = True


@register_attack("square")
class Square(TorchattacksAttack):
    """Square Attack, a score-based black-box random search (Andriushchenko et al. 2020)."""

    norms = ("linf", "l2")
    kind = "black-box"

    def __init__(self, *, norm: str = "linf", eps: float | str = 8 / 255, n_queries: int = 5000,
                 n_restarts: int = 1, p_init: float = 0.8, targeted: bool = False, early_stop: bool = True) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, early_stop=early_stop)
        self.n_queries = _positive_int("n_queries", n_queries)
        self.n_restarts = _positive_int("n_restarts", n_restarts)
        if not 0 < p_init <= 1:
            raise ConfigError(f"p_init must be in (0, 1], got {p_init}")
        self.p_init = float(p_init)

    def _make(self, model, n_classes, seed):
        import torchattacks

        return torchattacks.Square(model, norm=_TA_NORM[self.norm], eps=self.eps, n_queries=self.n_queries,
                                   n_restarts=self.n_restarts, p_init=self.p_init, seed=seed)


@register_attack("cw")
class CW(TorchattacksAttack):
    """Carlini & Wagner l2 (minimal norm, Adam on the margin); the result is projected onto the budget."""

    norms = ("l2",)
    minimal_norm = True

    def __init__(self, *, norm: str = "l2", eps: float | str = 0.5, c: float = 1.0, kappa: float = 0.0,
                 steps: int = 100, lr: float = 0.01, targeted: bool = False, early_stop: bool = True) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, early_stop=early_stop)
        if c <= 0 or kappa < 0 or lr <= 0:
            raise ConfigError(f"cw needs c > 0, kappa >= 0 and lr > 0; got c={c}, kappa={kappa}, lr={lr}")
        self.c, self.kappa, self.lr = float(c), float(kappa), float(lr)
        self.steps = _positive_int("steps", steps)

    def _make(self, model, n_classes, seed):
        import torchattacks

        return torchattacks.CW(model, c=self.c, kappa=self.kappa, steps=self.steps, lr=self.lr)


@register_attack("deepfool")
class DeepFool(TorchattacksAttack):
    """DeepFool (minimal l2 norm, linearised boundary steps); the result is projected onto the budget."""

    norms = ("l2",)
    minimal_norm = True

    def __init__(self, *, norm: str = "l2", eps: float | str = 0.5, steps: int = 50, overshoot: float = 0.02,
                 targeted: bool = False, early_stop: bool = True) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, early_stop=early_stop)
        self.steps = _positive_int("steps", steps)
        if overshoot < 0:
            raise ConfigError(f"overshoot must be >= 0, got {overshoot}")
        self.overshoot = float(overshoot)

    def _make(self, model, n_classes, seed):
        import torchattacks

        return torchattacks.DeepFool(model, steps=self.steps, overshoot=self.overshoot)

    def _targeted(self, ctx, x):
        """Targeted DeepFool (native): linearise ``Z_t - Z_pred`` and take the minimal l2 step that crosses
        it, with overshoot, until the target class wins; the result is projected onto the budget."""
        x_adv = x.clone()
        active = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.steps):
            logits, _, grad = ctx.loss_and_grad(x_adv[active], active, _target_gap)
            pred = logits.argmax(1)
            moving = pred != ctx.labels[active]
            if not bool(moving.any()):
                break
            active, grad, logits, pred = active[moving], grad[moving], logits[moving], pred[moving]
            gap = logits.gather(1, ctx.labels[active, None]).squeeze(1) - logits.gather(1, pred[:, None]).squeeze(1)
            flat = grad.flatten(1)
            step = ((gap.abs() + 1e-4) / flat.square().sum(1).clamp_min(1e-12))[:, None] * flat
            x_adv[active] = (x_adv[active] + (1 + self.overshoot) * step.reshape(grad.shape)).clamp(0, 1)
        return RawResult(x_adv=self.threat.project(x_adv, x))


def _target_gap(logits: torch.Tensor, target: torch.Tensor, targeted: bool) -> torch.Tensor:
    """``Z_t - Z_pred`` per sample (its gradient is DeepFool's linearisation towards the target)."""
    pred = logits.argmax(1)
    return logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, pred[:, None]).squeeze(1)


def native_apgd(attack: Attack, loss: str, steps: int | None = None):
    """advbench's APGD with the same budget (and steps/rho when the caller has them), in targeted mode."""
    from advbench.attacks.apgd import APGD

    return APGD(norm=attack.norm, eps=attack.eps, steps=steps or getattr(attack, "steps", 100), loss=loss,
                rho=getattr(attack, "rho", 0.75), targeted=True, early_stop=attack.early_stop)
