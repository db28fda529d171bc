"""Measure a multi-task attack: per-task metrics before and after, their change, and stealth success.

For each task the headline metric (mIoU, depth absolute error, normal angular error) on the clean and the
attacked images, over the whole set and per image; the change vs clean; the *degradation* (relative change in
the worse direction); and the stealth success rate (Guo, Zhang, Li et al., arXiv 2411.17936): the share of
images whose target task worsens by at least ``margin`` while every other task worsens by at most
``tolerance`` (:func:`advbench.multitask.metrics.stealth_success`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from advbench.attacks.multitask import MultiTaskAttack
from advbench.errors import ConfigError
from advbench.multitask.metrics import evaluate_multitask, metric_change, per_sample_metrics, stealth_success
from advbench.progress import progress_bar, step_ticks


def _per_sample(model: nn.Module, x: torch.Tensor, targets: Mapping[str, torch.Tensor],
                batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Per-image headline metrics, in batches."""
    parts: list[dict[str, torch.Tensor]] = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            batch = {t: v[i:i + batch_size] for t, v in targets.items()}
            parts.append(per_sample_metrics(model(x[i:i + batch_size]), batch,
                                            num_classes=getattr(model, "num_classes", None)))
    return {t: torch.cat([p[t] for p in parts]) for t in parts[0]}


def multitask_robustness(model: nn.Module, x: torch.Tensor, targets: Mapping[str, torch.Tensor],
                         attack: MultiTaskAttack, *, margin: float = 0.1, tolerance: float = 0.05,
                         batch_size: int = 32, progress: bool = False) -> dict[str, Any]:
    """Attack ``x`` in batches and summarise (JSON-ready floats, plus per-image rows under ``samples``).
    ``progress`` shows a bar on stderr counting attack steps on batches (``attack.steps`` per batch)."""
    if margin < 0 or tolerance < 0:
        raise ConfigError(f"margin and tolerance must be >= 0, got margin={margin}, tolerance={tolerance}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        return _summarise(model, x, targets, attack, margin, tolerance, batch_size, progress)
    finally:
        model.train(was_training)


def _summarise(model: nn.Module, x: torch.Tensor, targets: Mapping[str, torch.Tensor], attack: MultiTaskAttack,
               margin: float, tolerance: float, batch_size: int, progress: bool) -> dict[str, Any]:
    adv, weights, rel, grads = [], [], [], 0
    order: list[str] = []
    steps = int(attack.steps)
    bar = progress_bar(total=math.ceil(x.shape[0] / batch_size) * steps, desc=f"{attack.name or 'multi-task'} attack",
                       unit="step", enabled=progress and x.shape[0] > 0)
    try:
        for start in range(0, x.shape[0], batch_size):
            batch_targets = {t: v[start:start + batch_size] for t, v in targets.items()}
            # the attack's loop is the engine's: a forward pass with gradients on is one of its steps
            with step_ticks(bar, steps) as tick:
                hook = model.register_forward_hook(lambda *_, tick=tick: tick() if torch.is_grad_enabled() else None)
                try:
                    result = attack(model, x[start:start + batch_size], batch_targets)
                finally:
                    hook.remove()
            adv.append(result.x_adv)
            weights.append(result.weights)
            rel.append(result.relative_change)
            order, grads = result.tasks, grads + result.gradient_calls
    finally:
        bar.close()
    x_adv = torch.cat(adv)
    clean_set, adv_set = evaluate_multitask(model, x, targets), evaluate_multitask(model, x_adv, targets)
    change = metric_change(clean_set, adv_set)
    clean_ps, adv_ps = _per_sample(model, x, targets, batch_size), _per_sample(model, x_adv, targets, batch_size)
    target = getattr(attack, "target_task", None)
    metrics: dict[str, Any] = {"tasks": order, "clean": clean_set, "adversarial": adv_set,
                               "change": {t: {k: v for k, v in c.items() if k not in ("clean", "adv")}
                                          for t, c in change.items()}}
    w = torch.cat(weights)
    metrics["weights"] = dict(zip(order, w.mean(dim=0).tolist(), strict=True))
    metrics["relative_loss_change"] = dict(zip(order, torch.cat(rel).mean(dim=0).tolist(), strict=True))
    samples = []
    if target is not None:
        ok = stealth_success(clean_ps, adv_ps, target, margin=margin, tolerance=tolerance)
        metrics.update({"target_task": target, "margin": margin, "tolerance": tolerance,
                        "stealth_success_rate": float(ok.float().mean()),
                        "target_degradation": change[target]["degradation"],
                        "max_other_degradation": max((change[t]["degradation"] for t in order if t != target),
                                                     default=0.0)})
    else:
        ok = torch.zeros(x.shape[0], dtype=torch.bool)
    for i in range(x.shape[0]):
        row: dict[str, Any] = {"sample_index": i, "stealth_success": bool(ok[i])}
        for t in order:
            row[f"{t}_clean"], row[f"{t}_adv"] = float(clean_ps[t][i]), float(adv_ps[t][i])
        samples.append(row)
    return {"metrics": metrics, "cost": {"gradients": grads}, "samples": samples, "x_adv": x_adv}
