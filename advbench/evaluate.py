"""Cascade evaluation of a classifier under a suite of attacks and a list of budgets.

Following AutoAttack (Croce & Hein, ICML 2020), each attack runs only on the samples that are still
robust: a sample that is already broken is never attacked again.  Budgets are evaluated in increasing
order and the ball of a smaller eps lies inside the ball of a larger one, so a sample broken at a
small eps stays broken (with the same adversarial example) at every larger eps.

The result holds, per eps, robust accuracy, attack success rate (ASR = broken / clean-correct),
per-class robust accuracy, mean and max perturbation norms of the successful examples, and each
attack's contribution and cost, plus per-sample outcomes for the results store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advbench.attack import Attack, validate_batch
from advbench.errors import ConfigError
from advbench.progress import progress_bar
from advbench.sanity import BlackBoxStrongerWarning, ZeroGradientWarning, emit, zero_gradient_fraction
from advbench.threat import parse_eps, perturbation_norm


@dataclass
class EpsResult:
    """Metrics for one budget."""

    eps: float
    robust_accuracy: float
    attack_success_rate: float
    per_class_robust_accuracy: dict[int, float]
    mean_perturbation: float | None
    max_perturbation: float | None
    per_attack: dict[str, dict[str, Any]]


@dataclass
class EvaluationResult:
    """Everything one evaluation measured; ``summary()`` is the JSON the CLI prints."""

    n: int
    norm: str
    clean_accuracy: float
    per_eps: list[EpsResult]
    cost: dict[str, float]
    attacks: list[dict[str, Any]]
    warnings: list[dict[str, str]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    x_clean: torch.Tensor | None = None
    x_adv: dict[float, torch.Tensor] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Scalar metrics: one eps gives numbers, several give a ``curve`` (and the last eps' numbers)."""
        last = self.per_eps[-1]
        out: dict[str, Any] = {
            "n": self.n,
            "norm": self.norm,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": last.robust_accuracy,
            "attack_success_rate": last.attack_success_rate,
            "per_attack": last.per_attack,
            "per_class_robust_accuracy": {str(k): v for k, v in last.per_class_robust_accuracy.items()},
            "mean_perturbation": last.mean_perturbation,
            "max_perturbation": last.max_perturbation,
            "cost": self.cost,
            "warnings": self.warnings,
        }
        if len(self.per_eps) == 1:
            out["eps"] = last.eps
        else:
            out["curve"] = [
                {"eps": r.eps, "robust_accuracy": r.robust_accuracy, "attack_success_rate": r.attack_success_rate,
                 "mean_perturbation": r.mean_perturbation, "per_attack": r.per_attack}
                for r in self.per_eps
            ]
        return out


def _resolve_attacks(
    attacks: Sequence[Attack | str], eps_values: list[float] | None, norm: str | None, attack_kwargs
) -> tuple[list[float], dict[float, list[Attack]]]:
    from advbench import create_attack

    if not attacks:
        raise ConfigError("no attacks given: pass at least one attack name, e.g. attacks=['pgd']")
    kwargs = attack_kwargs or {}
    if eps_values is None:
        built = [a if isinstance(a, Attack) else create_attack(a, norm=norm or "linf", **kwargs.get(a, {}))
                 for a in attacks]
        budgets = {a.eps for a in built}
        if len(budgets) != 1:
            raise ConfigError(f"the attacks have different eps {sorted(budgets)}; pass eps=[...] explicitly")
        return [budgets.pop()], {built[0].eps: built}
    eps_sorted = sorted(set(eps_values))
    plan: dict[float, list[Attack]] = {}
    for eps in eps_sorted:
        row = []
        for a in attacks:
            if isinstance(a, Attack):
                row.append(a.with_eps(eps))
            else:
                row.append(create_attack(a, norm=norm or "linf", eps=eps, **kwargs.get(a, {})))
        plan[eps] = row
    return eps_sorted, plan


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(training)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attacks: Sequence[Attack | str],
    eps: Sequence[float | str] | float | str | None = None,
    norm: str | None = None,
    attack_kwargs: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    sanity_checks: bool = True,
    keep_examples: bool = True,
) -> EvaluationResult:
    """Run the attack cascade at every eps and measure clean and robust accuracy.

    ``attacks`` are registry names (built with ``norm``, each eps and ``attack_kwargs[name]``) or
    attack objects (re-budgeted per eps with :meth:`Attack.with_eps`).  Randomness comes from one
    ``torch.Generator`` seeded with ``seed``.

    >>> import torch
    >>> from advbench.models import create_model
    >>> torch.manual_seed(0) and None
    >>> model = create_model("mlp", input_shape=(1, 4, 4), num_classes=3)
    >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    >>> res = evaluate(model, x, y, attacks=["fgsm", "pgd"], eps=[0.0, 0.5], norm="linf")
    >>> [r.eps for r in res.per_eps]
    [0.0, 0.5]
    >>> res.per_eps[0].robust_accuracy == res.clean_accuracy
    True
    """
    validate_batch(x, y)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if eps is not None and not isinstance(eps, (list, tuple)):
        eps = [eps]
    eps_values = [parse_eps(e) for e in eps] if eps is not None else None
    eps_sorted, plan = _resolve_attacks(attacks, eps_values, norm, attack_kwargs)
    threat_norm = plan[eps_sorted[0]][0].norm
    if any(a.norm != threat_norm for row in plan.values() for a in row):
        raise ConfigError("all attacks in one evaluation must share a norm")
    start = time.perf_counter()
    n = x.shape[0]
    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    clean_pred = _predict(model, x, batch_size)
    clean_correct = clean_pred == y
    robust = clean_correct.clone()
    adv_pred = clean_pred.clone()
    broken_by: list[str | None] = [None if c else "clean" for c in clean_correct.tolist()]
    x_adv = x.clone() if keep_examples else None  # a full copy of the inputs only when the caller keeps them
    pert = torch.full((n,), float("nan"))
    warnings_out: list[dict[str, str]] = []
    total_grad = total_query = 0
    white_box = any(a.kind != "black-box" for row in plan.values() for a in row)
    for message in getattr(model, "run_warnings", ()):  # e.g. a recorded dtype cast, a capped --n-samples
        warnings_out.append({"name": "RunWarning", "message": message})
    if sanity_checks and white_box:  # a black-box cascade needs no gradient, so a model without one is fine
        probe = clean_correct.nonzero().flatten()[:batch_size]
        frac = zero_gradient_fraction(model, x[probe], y[probe])
        if frac > 0:
            emit(ZeroGradientWarning,
                 f"{frac:.0%} of {probe.numel()} correctly classified samples have an exactly zero input "
                 "gradient: white-box results may overstate robustness (gradient masking)", warnings_out)

    per_eps: list[EpsResult] = []
    samples: list[dict[str, Any]] = []
    kept: dict[float, torch.Tensor] = {}
    bar = progress_bar(total=len(eps_sorted) * len(plan[eps_sorted[0]]), desc="attacking", unit="attack",
                       enabled=progress, leave=False)
    for eps_value in eps_sorted:
        per_attack: dict[str, dict[str, Any]] = {}
        white_box_ran = False
        for attack in plan[eps_value]:
            idx_all = robust.nonzero().flatten()
            t0 = time.perf_counter()
            broken_here = grads = queries = 0
            for b in range(0, idx_all.numel(), batch_size):
                idx = idx_all[b : b + batch_size]
                out = attack(model, x[idx], y[idx], generator=generator)
                hit = out.success if not attack.targeted else out.adv_pred != y[idx]
                grads += out.total_gradients
                queries += out.total_queries
                won = idx[hit]
                robust[won] = False
                adv_pred[won] = out.adv_pred[hit]
                if x_adv is not None:
                    x_adv[won] = out.x_adv[hit]
                pert[won.cpu()] = perturbation_norm(out.x_adv[hit] - x[won], threat_norm).float().cpu()
                for i in won.tolist():
                    broken_by[i] = attack.name
                broken_here += int(hit.sum())
            total_grad += grads
            total_query += queries
            key = attack.name if attack.name not in per_attack else f"{attack.name}#{len(per_attack)}"
            per_attack[key] = {"broken": broken_here, "attacked": int(idx_all.numel()), "gradients": grads,
                               "queries": queries, "wall_time_s": round(time.perf_counter() - t0, 4),
                               "kind": attack.kind}
            if attack.kind == "black-box" and white_box_ran and broken_here > 0:
                emit(BlackBoxStrongerWarning,
                     f"black-box attack '{attack.name}' broke {broken_here} samples at eps={eps_value:g} that the "
                     "white-box attacks before it missed: check for gradient masking", warnings_out)
            white_box_ran = white_box_ran or attack.kind == "white-box"
            bar.update(1)
            bar.set_postfix(eps=f"{eps_value:g}", robust=int(robust.sum()), refresh=False)
        per_eps.append(_eps_metrics(eps_value, y, clean_correct, robust, pert, per_attack))
        if keep_examples:
            kept[eps_value] = x_adv.clone()  # type: ignore[union-attr]
        samples.extend(
            {"sample_index": i, "eps": eps_value, "label": int(y[i]), "clean_pred": int(clean_pred[i]),
             "clean_correct": bool(clean_correct[i]), "robust": bool(robust[i]), "adv_pred": int(adv_pred[i]),
             "broken_by": broken_by[i],
             "perturbation_norm": None if pert[i].isnan() else float(pert[i])}
            for i in range(n)
        )
    bar.close()
    return EvaluationResult(
        n=n,
        norm=threat_norm,
        clean_accuracy=float(clean_correct.float().mean()) if n else 0.0,
        per_eps=per_eps,
        cost={"gradients": total_grad, "queries": total_query + n,
              "wall_time_s": round(time.perf_counter() - start, 4)},
        attacks=[a.hyperparameters() | {"eps": None} for a in plan[eps_sorted[0]]],
        warnings=warnings_out,
        samples=samples,
        x_clean=x if keep_examples else None,
        x_adv=kept,
    )


def _eps_metrics(eps, y, clean_correct, robust, pert, per_attack) -> EpsResult:
    n = y.numel()
    n_correct = int(clean_correct.sum())
    broken = clean_correct & ~robust
    per_class = {}
    for c in sorted(set(y.tolist())):
        mask = y == c
        per_class[int(c)] = float(robust[mask].float().mean())
    norms = pert[broken.cpu()]
    return EpsResult(
        eps=eps,
        robust_accuracy=float(robust.float().mean()) if n else 0.0,
        attack_success_rate=float(broken.sum()) / n_correct if n_correct else 0.0,
        per_class_robust_accuracy=per_class,
        mean_perturbation=float(norms.mean()) if norms.numel() else None,
        max_perturbation=float(norms.max()) if norms.numel() else None,
        per_attack=per_attack,
    )
