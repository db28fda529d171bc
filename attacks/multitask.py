"""Attacks on multi-task dense-prediction models: break one task, keep the others (Guo, Zhang, Li et al.,
arXiv 2411.17936).

With ``r_j(delta) = (L_j(x + delta) - L_j(x)) / L_j(x)`` the relative change of task ``j``'s loss, the stealthy
attack solves

    max_delta r_t   subject to  r_j <= 0 for every j != t,  ||delta|| <= eps,

through its Lagrangian ``r_t - sum_j p_j r_j`` with per-sample multipliers ``p_j >= 0``.  The *automated weight
search* is dual ascent, ``p_j <- max(0, p_j + eta · r_j)``: a task that degrades gets a larger multiplier, and a
constraint that is never violated keeps ``p_j = 0``.  It runs on the min-max engine (:class:`advbench.minmax.APGDA`)
with the weights ``(1, p_1, ...)`` projected by :func:`advbench.minmax.project_multipliers` instead of onto
the simplex, and ``gamma = 0``.

Registered in :data:`advbench.attack.ATTACKS` with the task ``multi-task dense prediction``; build one with
``advbench.create_attack(name, ...)`` and call it as ``attack(model, x, targets, generator=...)`` with ``targets``
the ground truth of every task of the model:

* ``stealthy-multitask`` -- the dual-ascent search above (step ``dual_lr``).
* ``fixed-weight-multitask`` -- the same objective with given, fixed ``weights`` for the other tasks
  (``weights=0`` is plain PGD on the target task alone).
* ``all-tasks`` -- degrade every task: min-max simplex weights over the tasks' relative changes.

linf and l2 budgets; PGD steps of ``2.5 · eps / steps`` (50 steps in the reference setting).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advbench.attack import AttackBase, ThreatBudget, register_attack
from advbench.errors import BudgetError, ConfigError, InputError
from advbench.minmax import APGDA, project_multipliers
from advbench.task_names import MULTITASK
from advbench.threat import ThreatModel, parse_eps

#: Relative changes divide by the clean loss plus this, so a near-zero clean loss cannot explode them.
LOSS_FLOOR = 1e-4


class _TaskDomains:
    """Domain k = one task's relative loss change (signed so that the engine minimises)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, targets: Mapping[str, torch.Tensor],
                 tasks: Sequence[str], signs: torch.Tensor) -> None:
        from advbench.models.task_heads import get_task

        self.model, self.x, self.targets, self.names = model, x, targets, list(tasks)
        self.heads = [get_task(t) for t in tasks]
        self.signs = signs
        with torch.no_grad():
            self.clean = self.losses(x)

    def losses(self, x_adv: torch.Tensor) -> torch.Tensor:
        outputs = self.model(x_adv)
        return torch.stack([h.loss(outputs[t], self.targets[t]) for h, t in zip(self.heads, self.names, strict=True)],
                           dim=1)

    def relative(self, x_adv: torch.Tensor) -> torch.Tensor:
        return (self.losses(x_adv) - self.clean) / (self.clean.abs() + LOSS_FLOOR)

    def evaluate(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rel = self.relative((self.x + delta).clamp(0, 1))
        return self.signs * rel, torch.zeros_like(rel, dtype=torch.bool)


@dataclass
class MultiTaskAttackResult:
    """The adversarial images and the final weights / multipliers per sample, in the order of ``tasks``."""

    x_adv: torch.Tensor
    tasks: list[str]
    weights: torch.Tensor
    weight_trace: torch.Tensor
    relative_change: torch.Tensor  # (B, K) relative loss change per task at x_adv
    gradient_calls: int


class MultiTaskAttack(AttackBase, ThreatBudget):
    """Base: budget, steps and the engine run; subclasses choose the signs, the initial weights and their set.

    The call is ``attack(model, x, targets)``: ``model`` returns ``{task: output}``, ``x`` is a (B, C, H, W)
    batch in [0, 1] and ``targets`` maps every task of the model to its ground truth.  The attack has no
    randomness (it starts from ``x``); a generator passed in is accepted and unused."""

    task: ClassVar[str] = MULTITASK
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    def __init__(self, *, norm: str = "linf", eps: float | str = 8 / 255, steps: int = 50,
                 step_size: float | None = None, target_task: str | None = None) -> None:
        self.threat = ThreatModel(norm, parse_eps(eps))
        if norm not in self.norms:
            raise ConfigError(f"multi-task attacks support linf and l2, got '{norm}'")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {steps!r}")
        self.steps = steps
        self.step_size = self.threat.default_step_size(steps) if step_size is None else float(step_size)
        if not self.step_size > 0 and self.threat.eps > 0:
            raise ConfigError(f"step_size must be > 0, got {step_size}")
        self.target_task = target_task

    def _plan(self, tasks: Sequence[str]) -> tuple[list[str], torch.Tensor, APGDA]:
        """The domain order, their signs and the engine."""
        raise NotImplementedError

    def _check_target(self, tasks: Sequence[str]) -> str:
        from advbench.models.task_heads import TASK_HEADS

        target = self.target_task
        if target is None:
            raise ConfigError(f"'{self.name}' needs --target-task, one of the model's tasks: {', '.join(tasks)}")
        if target not in TASK_HEADS:
            from advbench.errors import UnknownNameError

            raise UnknownNameError(f"unknown task '{target}'; the model's tasks are {', '.join(tasks)}")
        if target not in tasks:
            raise ConfigError(f"target task '{target}' is not among the model's heads ({', '.join(tasks)})")
        return target

    def __call__(self, model: nn.Module, x: torch.Tensor,  # type: ignore[override]
                 targets: Mapping[str, torch.Tensor], *, target: Any = None,
                 generator: torch.Generator | None = None, progress: bool = False) -> MultiTaskAttackResult:
        """Attack ``model`` (returning ``{task: output}``) at ``x`` with ground truth ``targets``."""
        return super().__call__(model, x, targets, target=target, generator=generator, progress=progress)

    def _check_call(self, model: nn.Module, x: Any, y: Any, target: Any) -> None:
        """An image batch in [0, 1], ground truth for every task of the model; the target task is a
        hyperparameter, never a call argument."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise InputError(f"x must be a float image batch (B, C, H, W), got {getattr(x, 'shape', type(x))}")
        if not bool(torch.isfinite(x).all()) or (x.numel() and (float(x.min()) < 0 or float(x.max()) > 1)):
            raise InputError("x must be finite and lie in [0, 1] (normalisation belongs inside the model)")
        if target is not None:
            raise ConfigError(f"'{self.name}' takes its target task as a hyperparameter (target_task=...), not "
                              "as target=")
        if not isinstance(y, Mapping):
            raise InputError(f"multi-task ground truth must be a task -> tensor map, got {type(y).__name__}")
        model_tasks = list(getattr(model, "tasks", y.keys()))
        missing = [t for t in model_tasks if t not in y]
        if missing:
            raise InputError(f"no ground truth for task(s) {', '.join(missing)}; the data must cover the model's "
                             f"tasks ({', '.join(model_tasks)})")

    def _run(self, model: nn.Module, x: torch.Tensor, y: Mapping[str, torch.Tensor], target: Any,
             generator: torch.Generator, progress: bool) -> MultiTaskAttackResult:
        order, signs, engine = self._plan(list(getattr(model, "tasks", y.keys())))
        on_x = {t: v.to(x.device) for t, v in y.items()}  # ground truth may come from a CPU loader
        domains = _TaskDomains(model, x, on_x, order, signs.to(x))
        result = engine.run(domains, torch.zeros_like(x), lambda d: self.threat.project_delta(d, x),
                            lambda g: self.step_size * engine.alpha * self.threat.ascent_direction(g))
        x_adv = (x + result.delta).clamp(0, 1)
        with torch.no_grad():
            rel = domains.relative(x_adv)
        return MultiTaskAttackResult(x_adv=x_adv, tasks=order, weights=result.weights,
                                     weight_trace=result.weight_trace, relative_change=rel,
                                     gradient_calls=result.gradient_calls)

    def _check_output(self, x: Any, out: Any) -> None:
        """The adversarial images have the input's shape, are finite and lie in the budget's ball and the box."""
        x_adv = out.x_adv
        if x_adv.shape != x.shape or not bool(torch.isfinite(x_adv).all()):
            raise BudgetError(f"attack '{self.name}' returned shape {tuple(x_adv.shape)} or non-finite values")
        inside = self.threat.contains(x_adv, x)
        if not bool(inside.all()):
            raise BudgetError(f"attack '{self.name}' left the {self.threat.norm} ball of radius {self.threat.eps} "
                              f"or the [0,1] box for {int((~inside).sum())} samples; this is a bug in the attack")


def _target_first(tasks: Sequence[str], target: str) -> list[str]:
    return [target] + [t for t in tasks if t != target]


@register_attack("stealthy-multitask")
class StealthyMultiTask(MultiTaskAttack):
    """Maximise the target's relative loss change; dual ascent on non-negative multipliers of the others."""

    def __init__(self, *, dual_lr: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not dual_lr > 0:
            raise ConfigError(f"dual_lr (the multipliers' ascent step) must be > 0, got {dual_lr}")
        self.dual_lr = float(dual_lr)

    def _plan(self, tasks: Sequence[str]) -> tuple[list[str], torch.Tensor, APGDA]:
        order = _target_first(tasks, self._check_target(tasks))
        signs = torch.tensor([-1.0] + [1.0] * (len(order) - 1))

        def start(batch: int, k: int) -> torch.Tensor:
            return torch.cat([torch.ones(batch, 1), torch.zeros(batch, k - 1)], dim=1)

        engine = APGDA(steps=self.steps, alpha=1.0, beta=1.0 / self.dual_lr, gamma=0.0,
                       weight_projection=project_multipliers, initial_weights=start)
        return order, signs, engine


@register_attack("fixed-weight-multitask")
class FixedWeightMultiTask(MultiTaskAttack):
    """The baseline: ``r_t - sum_j lambda_j r_j`` with fixed ``weights`` (one number for all, or a task map);
    ``weights=0`` is plain PGD on the target task."""

    def __init__(self, *, weights: float | Mapping[str, float] = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        values = weights.values() if isinstance(weights, Mapping) else [weights]
        if any(not isinstance(v, int | float) or v < 0 for v in values):
            raise ConfigError(f"weights must be >= 0 (one number or a task -> number map), got {weights!r}")
        self.weights = dict(weights) if isinstance(weights, Mapping) else float(weights)

    def _plan(self, tasks: Sequence[str]) -> tuple[list[str], torch.Tensor, APGDA]:
        order = _target_first(tasks, self._check_target(tasks))
        if isinstance(self.weights, dict):
            unknown = [t for t in self.weights if t not in order[1:]]
            if unknown:
                raise ConfigError(f"weights name task(s) {', '.join(unknown)}; give weights for the non-target "
                                  f"tasks {', '.join(order[1:])}")
            lams = [float(self.weights.get(t, 1.0)) for t in order[1:]]
        else:
            lams = [self.weights] * (len(order) - 1)
        signs = torch.tensor([-1.0] + [1.0] * (len(order) - 1))
        fixed = torch.tensor([1.0, *lams])

        def start(batch: int, k: int) -> torch.Tensor:
            return fixed.expand(batch, k).clone()

        engine = APGDA(steps=self.steps, alpha=1.0, gamma=0.0, fixed_weights=True, initial_weights=start)
        return order, signs, engine


@register_attack("all-tasks")
class AllTasks(MultiTaskAttack):
    """Degrade every task: the min-max engine's simplex weights over the tasks (the hardest weighs most)."""

    def __init__(self, *, beta: float = 10.0, gamma: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beta, self.gamma = float(beta), float(gamma)

    def _plan(self, tasks: Sequence[str]) -> tuple[list[str], torch.Tensor, APGDA]:
        order = list(tasks)
        return order, -torch.ones(len(order)), APGDA(steps=self.steps, alpha=1.0, beta=self.beta, gamma=self.gamma)
