"""Adversarial training against several perturbation types at once: min-max, MAX and AVG.

*Generalized adversarial training* (Wang, Zhang, Liu et al., NeurIPS 2021, arXiv 1906.03563):
each minibatch gets one PGD example per perturbation type (e.g. linf and l2), and the model minimises
``sum_k w_k L_k`` where ``L_k`` is the batch loss under type ``k`` and ``w`` lives on the simplex, updated by
the min-max engine's regularised projected ascent (:meth:`advbench.minmax.APGDA.update_weights`), so the
type the model currently handles worst weighs most.  The baselines of Tramèr & Boneh (NeurIPS 2019):
``max`` (per sample, the worst type) and ``avg`` (the mean over types).

Use it through :func:`advbench.training.train_classifier` with ``adversarial="gat-minmax"`` (or
``gat-max``/``gat-avg``) and ``gat_types="linf:0.1,l2:1.0"``, or ``advbench train --adversarial gat-minmax``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from advbench.errors import ConfigError
from advbench.minmax import APGDA
from advbench.threat import NORMS, parse_eps

STRATEGIES = ("minmax", "max", "avg")


def parse_types(text: str) -> list[tuple[str, float]]:
    """``"linf:0.1,l2:1.0"`` -> ``[("linf", 0.1), ("l2", 1.0)]`` (eps fractions like 8/255 allowed)."""
    types = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        norm, sep, eps = item.partition(":")
        if not sep or norm.strip() not in NORMS:
            raise ConfigError(f"perturbation type '{item}' must look like NORM:EPS with NORM in {', '.join(NORMS)}, "
                              "e.g. linf:0.1,l2:1.0")
        types.append((norm.strip(), parse_eps(eps.strip())))
    if len(types) < 2:
        raise ConfigError(f"generalized adversarial training needs at least two perturbation types, got '{text}'")
    return types


@dataclass
class MultiPerturbationLoss:
    """The training loss of one minibatch under several perturbation types; keeps the weight trace."""

    types: list[tuple[str, float]]
    strategy: str = "minmax"
    steps: int = 10
    beta: float = 10.0
    gamma: float = 1.0
    weights: torch.Tensor | None = None
    trace: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from advbench import create_attack

        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got '{self.strategy}'")
        self.attacks = [create_attack("pgd", norm=norm, eps=eps, steps=self.steps, early_stop=False)
                        for norm, eps in self.types]
        self.engine = APGDA(steps=1, beta=self.beta, gamma=self.gamma)
        k = len(self.types)
        self.weights = torch.full((1, k), 1.0 / k)

    @property
    def names(self) -> list[str]:
        return [f"{norm}:{eps:g}" for norm, eps in self.types]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        adversarial = [attack(model, x, y, generator=generator).x_adv for attack in self.attacks]
        model.train()
        losses = torch.stack([F.cross_entropy(model(xa), y, reduction="none") for xa in adversarial])  # (K, B)
        if self.strategy == "avg":
            return losses.mean()
        if self.strategy == "max":
            return losses.amax(dim=0).mean()
        per_type = losses.mean(dim=1)
        weights = self.weights.to(per_type)
        self.weights = self.engine.update_weights(weights, per_type.detach().unsqueeze(0), 1.0 / self.beta)
        self.trace.append(self.weights[0].tolist())
        return (self.weights[0] * per_type).sum()
