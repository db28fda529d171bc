"""Ensemble attack: one perturbation that fools K victim models, each model a domain of the min-max
engine (Wang et al., NeurIPS 2021, §4 "robust adversarial attack over model ensembles").  The learned
weights rank the models by difficulty: the most robust model ends up with the largest weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advbench.attack import AttackContext, register_attack
from advbench.attacks.multidomain import MultiDomainAttack, domain_success
from advbench.errors import ConfigError


class ModelEnsemble(nn.Module):
    """K victim models that share an input shape and a class count.  ``forward`` averages their logits
    (so single-model tooling still works); the attack queries each member separately."""

    def __init__(self, models: Sequence[nn.Module], names: Sequence[str] | None = None) -> None:
        super().__init__()
        models = list(models)
        if len(models) < 2:
            raise ConfigError(f"an ensemble attack needs at least 2 victim models, got {len(models)}")
        shapes = [tuple(getattr(m, "input_shape", ())) for m in models]
        classes = [getattr(m, "num_classes", None) for m in models]
        if len({s for s in shapes if s}) > 1:
            raise ConfigError(f"the victim models disagree on input shape: {shapes}")
        if len({c for c in classes if c is not None}) > 1:
            raise ConfigError(f"the victim models disagree on the number of classes: {classes}")
        self.members = nn.ModuleList(models)
        self.names = list(names) if names is not None else [f"model{i}" for i in range(len(models))]
        if len(self.names) != len(models):
            raise ConfigError("give one name per model")
        if shapes[0]:
            self.input_shape = shapes[0]
        if classes[0] is not None:
            self.num_classes = classes[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


class _EnsembleDomains:
    def __init__(self, ensemble: ModelEnsemble, x: torch.Tensor, labels: torch.Tensor, attack) -> None:
        self.names, self.ensemble, self.x, self.labels, self.attack = ensemble.names, ensemble, x, labels, attack

    def evaluate(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.x + delta
        losses, success = [], []
        for model in self.ensemble.members:
            logits = model(x_adv)
            losses.append(self.attack.domain_loss(logits, self.labels))
            success.append(domain_success(logits, self.labels, self.attack.targeted))
        return torch.stack(losses, dim=1), torch.stack(success, dim=1)


class _EnsembleBase(MultiDomainAttack):
    def build(self, ctx: AttackContext, x: torch.Tensor):
        if not isinstance(ctx.model, ModelEnsemble):
            raise ConfigError(f"'{self.name}' attacks a ModelEnsemble of at least 2 models; wrap them with "
                              "advbench.attacks.ensemble.ModelEnsemble([...]) or pass several --model values")

        def project(delta: torch.Tensor) -> torch.Tensor:
            return self.threat.project_delta(delta, x)

        return _EnsembleDomains(ctx.model, x, ctx.labels, self), torch.zeros_like(x), project, lambda d: x + d


@register_attack("minmax-ensemble")
class MinMaxEnsemble(_EnsembleBase):
    """APGDA over K models: learned per-sample weights on the models."""


@register_attack("avg-ensemble")
class AvgEnsemble(_EnsembleBase):
    """The averaging baseline: the same loop with the weights fixed to 1/K."""

    averaging = True
