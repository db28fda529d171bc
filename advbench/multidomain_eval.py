"""Evaluation of the min-max recipes (ensemble, universal, transformations) over a list of budgets.

Only samples that every domain classifies correctly before the attack are used (for an ensemble:
every member; for transformations and universal perturbations: the model on the clean input), so ASR
numbers mean "flipped a correct decision".  Reported per eps (Wang et al., NeurIPS 2021):

* ``asr_all``: the attack succeeds in every domain at once (for universal perturbations: every input of
  a group, i.e. the group ASR);
* ``asr_avg``: the mean over domains;
* ``per_domain``: each domain's ASR, and ``weights``: the mean learned weight per domain, with the mean
  weight trace over the iterations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advbench.attack import ATTACKS
from advbench.errors import ConfigError, InputError
from advbench.progress import progress_bar
from advbench.threat import parse_eps


@dataclass
class MultiDomainResult:
    attack: str
    n_evaluated: int
    n_used: int
    per_eps: list[dict[str, Any]]
    cost: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        last = {k: v for k, v in self.per_eps[-1].items() if k != "weight_trace"}
        out = {"n": self.n_used, "n_evaluated": self.n_evaluated, "attack": self.attack, **last,
               "weight_trace": self.per_eps[-1]["weight_trace"]}
        if len(self.per_eps) > 1:
            out.pop("eps")
            out["curve"] = [{k: v for k, v in p.items() if k != "weight_trace"} for p in self.per_eps]
        return out


def _clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    members = getattr(model, "members", [model])
    with torch.no_grad():
        return torch.stack([m(x).argmax(1) == y for m in members]).all(dim=0)


def evaluate_multidomain(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attack: str,
    eps: list[float | str],
    norm: str = "linf",
    params: dict[str, Any] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> MultiDomainResult:
    """Run one multi-domain recipe at every eps on the samples that every domain gets right."""
    from advbench import create_attack
    from advbench.attacks.multidomain import multidomain_metrics

    params = dict(params or {})
    if not getattr(ATTACKS.get(attack), "multi_domain", False):
        raise ConfigError(f"'{attack}' is not a min-max recipe; use advbench.evaluate for single-model attacks")
    eps_values = sorted({parse_eps(e) for e in eps})
    start = time.perf_counter()
    keep = _clean_correct(model, x, y)
    xs, ys, index = x[keep], y[keep], keep.nonzero().flatten()
    k = create_attack(attack, norm=norm, eps=eps_values[0], **params).k if "universal" in attack else 1
    if "universal" in attack:
        if xs.shape[0] < k:
            raise InputError(f"k={k} is larger than the data: only {xs.shape[0]} correctly classified samples")
        usable = xs.shape[0] - xs.shape[0] % k
        xs, ys, index = xs[:usable], ys[:usable], index[:usable]
        batch_size = max(k, batch_size - batch_size % k)
    generator = torch.Generator(device=x.device).manual_seed(int(seed))
    per_eps, samples, grads, queries = [], [], 0, 0
    bar = progress_bar(total=len(eps_values), desc=attack, unit="eps", enabled=progress, leave=False)
    for eps_value in eps_values:
        atk = create_attack(attack, norm=norm, eps=eps_value, **params)
        outputs = []
        for b in range(0, xs.shape[0], batch_size):
            out = atk(model, xs[b : b + batch_size], ys[b : b + batch_size], generator=generator)
            outputs.append(out)
            grads += out.total_gradients
            queries += out.total_queries
        if outputs:
            metrics = multidomain_metrics(outputs)
            success = torch.cat([o.success for o in outputs])
        else:
            metrics = {"asr_all": 0.0, "asr_avg": 0.0, "per_domain": {}, "weights": {}, "weight_trace": []}
            success = torch.zeros(0, dtype=torch.bool)
        metrics.pop("n_rows", None)
        per_eps.append({"eps": eps_value, **metrics})
        samples.extend({"sample_index": int(i), "eps": eps_value, "label": int(ys[j]), "clean_correct": True,
                        "robust": not bool(success[j]), "broken_by": attack if bool(success[j]) else None}
                       for j, i in enumerate(index.tolist()))
        bar.update(1)
    bar.close()
    return MultiDomainResult(attack=attack, n_evaluated=int(x.shape[0]), n_used=int(xs.shape[0]), per_eps=per_eps,
                             cost={"gradients": grads, "queries": queries,
                                   "wall_time_s": round(time.perf_counter() - start, 4)},
                             samples=samples)
