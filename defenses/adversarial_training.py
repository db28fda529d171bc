"""Adversarial training, in one place: PGD training (Madry et al., ICLR 2018) and training against several
perturbation types at once (min-max, MAX and AVG).

:func:`training_objective` turns a training mode (``pgd``, ``gat-minmax``, ``gat-max``, ``gat-avg``) into what
the training loop (:func:`advbench.training.fit`) needs: an attack that replaces each minibatch, or a batch loss.
:func:`pgd_training_attack` is the PGD of Madry et al. that standard and ADMM adversarial training share.

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
from typing import Any

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


def pgd_training_attack(*, eps: float, steps: int, norm: str = "linf") -> Any:
    """PGD as Madry et al. (ICLR 2018) train with: every sample of a minibatch attacked for all ``steps``
    (no early stop), from a random start drawn from the training loop's generator."""
    from advbench import create_attack

    return create_attack("pgd", norm=norm, eps=eps, steps=steps, early_stop=False)


def training_objective(mode: str | None, *, norm: str = "linf", eps: float = 0.1, steps: int = 10,
                       gat_types: str = "linf:0.1,l2:1.0", beta: float = 10.0,
                       gamma: float = 1.0) -> tuple[Any, Any]:
    """``(attack, batch_loss)`` for the training mode ``mode``: ``None`` trains on clean minibatches, ``pgd``
    replaces each minibatch by :func:`pgd_training_attack` examples, ``gat-*`` uses a
    :class:`MultiPerturbationLoss` over ``gat_types`` (strategy after the dash)."""
    if mode is None:
        return None, None
    if mode == "pgd":
        return pgd_training_attack(norm=norm, eps=eps, steps=steps), None
    strategy = mode.removeprefix("gat-")
    if not mode.startswith("gat-") or strategy not in STRATEGIES:
        raise ConfigError(f"unknown adversarial training mode '{mode}'; choose pgd or "
                          f"{', '.join('gat-' + s for s in STRATEGIES)}")
    return None, MultiPerturbationLoss(parse_types(gat_types), strategy=strategy, steps=steps, beta=beta,
                                       gamma=gamma)
