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

import numpy as np
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


def predict_labels(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(training)


@dataclass
class BatchCascade:
    """One batch through the cascade at every eps: JSON-able ``result`` and, when asked, the examples."""

    result: dict[str, Any]
    x_adv: dict[float, torch.Tensor] = field(default_factory=dict)


def eps_key(eps: float) -> str:
    """The JSON key of one budget in a batch result (``repr`` round-trips a float exactly)."""
    return repr(float(eps))


def cascade_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: dict[float, list[Attack]], *,
                  generator: torch.Generator, offset: int = 0, probe: bool = False, keep_examples: bool = False,
                  sample_ids: Sequence[str] | None = None) -> BatchCascade:
    """Clean prediction, then every eps of ``plan`` (ascending) on this batch's still-robust samples.

    The ball of a smaller eps lies inside the ball of a larger one, so a sample broken at a small eps stays
    broken, with the same example, at every larger eps.  ``offset`` is the batch's first sample index;
    ``probe`` runs the zero-gradient check on this batch's correctly classified samples.  The result holds the
    per-sample rows, each attack's counters per eps, the clean queries and the warnings (see :func:`merge_cascade`).
    """
    eps_sorted = sorted(plan)
    threat_norm = plan[eps_sorted[0]][0].norm
    n = x.shape[0]
    clean_pred = predict_labels(model, x, max(n, 1))
    clean_correct = clean_pred == y
    robust = clean_correct.clone()
    adv_pred = clean_pred.clone()
    broken_by: list[str | None] = [None if c else "clean" for c in clean_correct.tolist()]
    x_adv = x.clone() if keep_examples else None
    pert = torch.full((n,), float("nan"))
    warnings_out: list[dict[str, str]] = []
    if probe and any(a.kind != "black-box" for row in plan.values() for a in row):
        chosen = clean_correct.nonzero().flatten()
        if chosen.numel():
            frac = zero_gradient_fraction(model, x[chosen], y[chosen])
            if frac > 0:
                emit(ZeroGradientWarning,
                     f"{frac:.0%} of {chosen.numel()} correctly classified samples have an exactly zero input "
                     "gradient: white-box results may overstate robustness (gradient masking)", warnings_out)
    counters: dict[str, dict[str, dict[str, Any]]] = {}
    wall: dict[str, dict[str, float]] = {}
    rows: list[dict[str, Any]] = []
    kept: dict[float, torch.Tensor] = {}
    for eps_value in eps_sorted:
        per_attack: dict[str, dict[str, Any]] = {}
        times: dict[str, float] = {}
        for attack in plan[eps_value]:
            idx = robust.nonzero().flatten()
            t0 = time.perf_counter()
            broken_here = grads = queries = 0
            if idx.numel():
                out = attack(model, x[idx], y[idx], generator=generator)
                hit = out.success if not attack.targeted else out.adv_pred != y[idx]
                grads, queries = int(out.total_gradients), int(out.total_queries)
                won = idx[hit]
                robust[won] = False
                adv_pred[won] = out.adv_pred[hit]
                if x_adv is not None:
                    x_adv[won] = out.x_adv[hit]
                pert[won.cpu()] = perturbation_norm(out.x_adv[hit] - x[won], threat_norm).float().cpu()
                for i in won.tolist():
                    broken_by[i] = attack.name
                broken_here = int(hit.sum())
            key = attack.name if attack.name not in per_attack else f"{attack.name}#{len(per_attack)}"
            per_attack[key] = {"broken": broken_here, "attacked": int(idx.numel()), "gradients": grads,
                               "queries": queries, "kind": attack.kind}
            times[key] = time.perf_counter() - t0
        counters[eps_key(eps_value)] = per_attack
        wall[eps_key(eps_value)] = times
        if x_adv is not None:
            kept[eps_value] = x_adv.clone()
        for i in range(n):
            row = {"sample_index": offset + i, "eps": eps_value, "label": int(y[i]), "clean_pred": int(clean_pred[i]),
                   "clean_correct": bool(clean_correct[i]), "robust": bool(robust[i]), "adv_pred": int(adv_pred[i]),
                   "broken_by": broken_by[i], "perturbation_norm": None if pert[i].isnan() else float(pert[i])}
            if sample_ids is not None:
                row["sample_id"] = sample_ids[i]
            rows.append(row)
    result = {"n": n, "samples": rows, "attacks": counters, "wall_time_s": wall, "warnings": warnings_out}
    return BatchCascade(result, kept)


def merge_cascade(results: Sequence[dict[str, Any]], eps_sorted: Sequence[float], norm: str,
                  run_warnings: Sequence[str] = ()) -> dict[str, Any]:
    """Every batch's :func:`cascade_batch` result (in batch order) -> per-eps metrics, cost and rows.

    Reads only the batch results, so a resumed or sharded run merges to what an uninterrupted run gives.
    Returns ``{"per_eps": [EpsResult], "clean_accuracy", "n", "gradients", "queries", "wall_time_s",
    "per_attack_wall_time_s", "warnings", "samples"}``.
    """
    rows = [row for result in results for row in result["samples"]]
    n = sum(int(result["n"]) for result in results)
    warnings_out = [{"name": "RunWarning", "message": m} for m in run_warnings]
    for result in results:  # each warning once, however many batches raised it
        warnings_out.extend(w for w in result.get("warnings", []) if w not in warnings_out)
    per_eps, grads, queries, walls = [], 0, n, {}
    for eps_value in eps_sorted:
        key = eps_key(eps_value)
        per_attack: dict[str, dict[str, Any]] = {}
        for result in results:
            for name, counts in result["attacks"][key].items():
                into = per_attack.setdefault(name, {"broken": 0, "attacked": 0, "gradients": 0, "queries": 0,
                                                    "kind": counts["kind"]})
                for field_name in ("broken", "attacked", "gradients", "queries"):
                    into[field_name] += int(counts[field_name])
                walls[f"{eps_value:g}/{name}"] = walls.get(f"{eps_value:g}/{name}", 0.0) + \
                    float(result["wall_time_s"][key][name])
        white_box_ran = False
        for name, counts in per_attack.items():
            grads += counts["gradients"]
            queries += counts["queries"]
            if counts["kind"] == "black-box" and white_box_ran and counts["broken"] > 0:
                emit(BlackBoxStrongerWarning,
                     f"black-box attack '{name.split('#')[0]}' broke {counts['broken']} samples at eps={eps_value:g} "
                     "that the white-box attacks before it missed: check for gradient masking", warnings_out)
            white_box_ran = white_box_ran or counts["kind"] == "white-box"
        at_eps = [row for row in rows if row["eps"] == eps_value]
        per_eps.append(_row_metrics(eps_value, at_eps, per_attack))
    clean = sum(1 for row in rows if row["eps"] == eps_sorted[0] and row["clean_correct"])
    return {"per_eps": per_eps, "clean_accuracy": clean / n if n else 0.0, "n": n, "gradients": grads,
            "queries": queries, "wall_time_s": round(sum(walls.values()), 4),
            "per_attack_wall_time_s": {k: round(v, 4) for k, v in walls.items()}, "warnings": warnings_out,
            "samples": rows}


def _row_metrics(eps: float, rows: Sequence[dict[str, Any]], per_attack: dict[str, dict[str, Any]]) -> EpsResult:
    n = len(rows)
    n_correct = sum(1 for r in rows if r["clean_correct"])
    broken = [r for r in rows if r["clean_correct"] and not r["robust"]]
    per_class: dict[int, list[int]] = {}
    for r in rows:
        per_class.setdefault(int(r["label"]), []).append(int(r["robust"]))
    norms = [float(r["perturbation_norm"]) for r in broken if r["perturbation_norm"] is not None]
    return EpsResult(
        eps=eps,
        robust_accuracy=sum(1 for r in rows if r["robust"]) / n if n else 0.0,
        attack_success_rate=len(broken) / n_correct if n_correct else 0.0,
        per_class_robust_accuracy={c: sum(v) / len(v) for c, v in sorted(per_class.items())},
        mean_perturbation=float(np.mean(np.asarray(norms, dtype=np.float32))) if norms else None,
        max_perturbation=max(norms) if norms else None,
        per_attack=per_attack,
    )


def build_plan(attacks: Sequence[Attack | str], eps: Sequence[float | str] | float | str | None, norm: str | None,
               attack_kwargs: dict[str, dict[str, Any]] | None) -> tuple[list[float], dict[float, list[Attack]]]:
    """Every attack built once per eps (ascending); all share one norm."""
    if eps is not None and not isinstance(eps, (list, tuple)):
        eps = [eps]
    eps_values = [parse_eps(e) for e in eps] if eps is not None else None
    eps_sorted, plan = _resolve_attacks(attacks, eps_values, norm, attack_kwargs)
    threat_norm = plan[eps_sorted[0]][0].norm
    if any(a.norm != threat_norm for row in plan.values() for a in row):
        raise ConfigError("all attacks in one evaluation must share a norm")
    return eps_sorted, plan


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
    """Run the attack cascade at every eps on in-memory samples and measure clean and robust accuracy.

    The same batch cascade as the streamed pipeline (:func:`cascade_batch`, merged by :func:`merge_cascade`),
    for tensors already in memory.  ``attacks`` are registry names (built with ``norm``, each eps and
    ``attack_kwargs[name]``) or attack objects (re-budgeted per eps with :meth:`Attack.with_eps`).  Randomness
    comes from one ``torch.Generator`` seeded with ``seed``.

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
    eps_sorted, plan = build_plan(attacks, eps, norm, attack_kwargs)
    threat_norm = plan[eps_sorted[0]][0].norm
    start = time.perf_counter()
    n = x.shape[0]
    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    results, kept = [], {}
    bar = progress_bar(total=n, desc="attacking", unit="sample", enabled=progress, leave=False)
    for first in range(0, n, batch_size):
        batch = cascade_batch(model, x[first:first + batch_size], y[first:first + batch_size], plan,
                              generator=generator, offset=first, probe=sanity_checks and first == 0,
                              keep_examples=keep_examples)
        results.append(batch.result)
        for eps_value, examples in batch.x_adv.items():
            kept.setdefault(eps_value, []).append(examples)
        bar.update(min(batch_size, n - first))
    bar.close()
    merged = merge_cascade(results, eps_sorted, threat_norm, getattr(model, "run_warnings", ()))
    return EvaluationResult(
        n=n,
        norm=threat_norm,
        clean_accuracy=merged["clean_accuracy"],
        per_eps=merged["per_eps"],
        cost={"gradients": merged["gradients"], "queries": merged["queries"],
              "wall_time_s": round(time.perf_counter() - start, 4)},
        attacks=[a.hyperparameters() | {"eps": None} for a in plan[eps_sorted[0]]],
        warnings=merged["warnings"],
        samples=merged["samples"],
        x_clean=x if keep_examples else None,
        x_adv={e: torch.cat(parts) for e, parts in kept.items()},
    )
