"""The attack protocol: :class:`AttackBase`, the classifier :class:`Attack` and :class:`AttackOutput`.

Following foolbox 3, an attack object holds only validated, keyword-only hyperparameters and is
immutable once built; the model is passed at call time, and the randomness comes from the generator
passed with it (an attack never keeps a seed of its own)::

    attack = create_attack("pgd", norm="linf", eps=0.1, steps=20)
    out = attack(model, x, y, generator=torch.Generator().manual_seed(0))

Every attack, whatever its task, is an :class:`AttackBase` registered in :data:`ATTACKS` with its
``task``: ``classification`` (:class:`Attack`, labels are class indices), ``detection`` (roof patches,
:mod:`advbench.attacks.patch`: the input is a set of images with their vehicles) and ``multi-task dense
prediction`` (:mod:`advbench.attacks.multitask`: the ground truth is a task -> target map).  The base
:meth:`AttackBase.__call__` owns the invariants of the call: it checks the input, puts every model the
attack uses in eval mode with frozen parameters and restores them afterwards, hands the attack a
generator, and checks that what comes back is an allowed point.  A broken invariant raises
:class:`~advbench.errors.BudgetError` or :class:`~advbench.errors.InputError`; it is never a warning.

For classifiers the input is an NCHW float batch in [0,1] with integer labels; random targets come
from the explicit generator; subclasses only write the loop in :meth:`Attack._attack`, talking to the
model through an :class:`AttackContext` that counts queries and gradients per sample.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from advbench.errors import BudgetError, ConfigError, InputError
from advbench.registry import Registry
from advbench.task_names import CLASSIFICATION
from advbench.threat import NORMS, ThreatModel, parse_eps


@dataclass
class AttackOutput:
    """What every attack returns.

    ``x_adv`` is the projected, clipped adversarial batch.  ``success`` says whether ``x_adv`` is
    misclassified (untargeted) or classified as ``target`` (targeted); ``success_step`` is the step
    at which it first succeeded (0 = the starting point, -1 = never; for attacks that do not track
    steps, the gradient steps spent on the sample).  ``n_gradients`` and
    ``n_queries`` count, per sample, input-gradient computations and forward passes.  Min-max
    recipes also fill ``weights`` (batch, K) and ``weight_trace`` (steps, batch, K).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    success_step: torch.Tensor
    n_gradients: torch.Tensor
    n_queries: torch.Tensor
    adv_pred: torch.Tensor
    target: torch.Tensor | None = None
    loss_trace: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    weight_trace: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def total_gradients(self) -> int:
        return int(self.n_gradients.sum())

    @property
    def total_queries(self) -> int:
        return int(self.n_queries.sum())


@dataclass
class RawResult:
    """What :meth:`Attack._attack` hands back to the base class."""

    x_adv: torch.Tensor
    adv_pred: torch.Tensor | None = None
    success_step: torch.Tensor | None = None
    loss_trace: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    weight_trace: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class AttackContext:
    """The attack's view of one call: model access with per-sample cost accounting."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        *,
        targeted: bool,
        threat: ThreatModel,
        generator: torch.Generator,
    ) -> None:
        self.model = model
        self.x = x
        self.labels = labels
        self.targeted = targeted
        self.threat = threat
        self.generator = generator
        self.n_queries = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        self.n_gradients = torch.zeros_like(self.n_queries)
        self._checked = False

    def _forward(self, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        try:
            logits = self.model(x)
        except RuntimeError as err:
            if self._checked:
                raise
            raise InputError(
                f"input of shape {tuple(self.x.shape)} does not fit the model ({err}); "
                "check the dataset and model input shapes"
            ) from err
        if not self._checked:
            check_logits(logits, x.shape[0], self.labels)
            self._checked = True
        if idx is None:
            self.n_queries += 1
        else:
            self.n_queries[idx] += 1
        return logits

    def logits(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Forward pass without gradient; counts one query for each sample in ``idx``."""
        with torch.no_grad():
            return self._forward(x, idx)

    def loss_and_grad(
        self, x: torch.Tensor, idx: torch.Tensor | None, loss_fn
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, per-sample loss and input gradient of ``loss_fn`` at ``x``."""
        labels = self.labels if idx is None else self.labels[idx]
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self._forward(x, idx)
            loss = loss_fn(logits, labels, self.targeted)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        if idx is None:
            self.n_gradients += 1
        else:
            self.n_gradients[idx] += 1
        return logits.detach(), loss.detach(), grad

    def is_success(self, logits: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample goal test for logits of the samples ``idx``."""
        labels = self.labels if idx is None else self.labels[idx]
        pred = logits.argmax(dim=1)
        return pred == labels if self.targeted else pred != labels


def check_logits(logits: torch.Tensor, n: int, labels: torch.Tensor) -> None:
    """The model must return (N, C) logits and every label must be a class index below C."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != n:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"the model must return logits of shape (batch, classes); got {shape}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise InputError(
            f"labels must lie in [0, {logits.shape[1] - 1}] for a model with {logits.shape[1]} classes; "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def validate_batch(x: Any, y: Any, name: str = "x") -> None:
    """Check the input contract: NCHW floating tensor in [0,1], finite, and (N,) integer labels."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating tensor with values in [0,1], got dtype {x.dtype}")
    if x.ndim != 4:
        raise InputError(f"{name} must be a NCHW batch (4 dims), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains NaN or infinite values; clean the input before attacking")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise InputError(
            f"{name} must lie in [0,1] (normalization belongs inside the model wrapper); "
            f"got values in [{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise InputError(f"labels must be a 1-D tensor with one entry per sample ({x.shape[0]}), got {shape}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"labels must be an integer tensor, got dtype {y.dtype}")
    if y.device != x.device:
        raise InputError(f"labels are on {y.device} but {name} is on {x.device}; move both to the model's device")


class _FrozenAfterInit(type):
    """Metaclass that makes instances immutable once ``__init__`` has finished."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if isinstance(cls, type) and hasattr(cls, "parameter_names") and not args:
            kwargs = checked_hyperparameters(cls, kwargs)
        obj = super().__call__(*args, **kwargs)
        object.__setattr__(obj, "_frozen", True)
        return obj


def checked_hyperparameters(cls: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown hyperparameters and values of the wrong type with an error that names the parameter and
    lists the valid ones (``--param pgd.stepz=3`` used to end in a TypeError from deep inside the class)."""
    valid = cls.parameter_names()
    label = getattr(cls, "name", "") or cls.__name__
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise ConfigError(f"attack '{label}' has no parameter {', '.join(repr(k) for k in unknown)}; its parameters "
                          f"are: {', '.join(valid)}")
    defaults: dict[str, Any] = {}
    annotations: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is not None:
            params = inspect.signature(init).parameters.items()
            defaults.update({p: spec.default for p, spec in params if spec.default is not inspect.Parameter.empty})
            annotations.update({p: str(spec.annotation) for p, spec in params})
    out = dict(kwargs)
    for key, value in kwargs.items():
        default = defaults.get(key)
        if value is None:  # "use the default behaviour": the attack's own checks decide
            continue
        hint = annotations.get(key, "")
        if "Mapping" in hint or "dict" in hint:  # e.g. one number or a per-task map: the attack checks it
            continue
        if default is None:  # optional numbers (e.g. step_size: float | None) are typed by their annotation
            if "float" in hint:
                default = 0.0
            elif "int" in hint and "str" not in hint:
                default = 0
        if isinstance(default, bool):
            if isinstance(value, np.bool_):
                out[key] = bool(value)
            elif not isinstance(value, bool):
                raise ConfigError(f"{label}.{key} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool):
                raise ConfigError(f"{label}.{key} must be an integer, got {value!r}")
            if isinstance(value, numbers.Integral):
                out[key] = int(value)
            elif isinstance(value, numbers.Real) and float(value).is_integer():
                out[key] = int(value)
            else:
                raise ConfigError(f"{label}.{key} must be an integer, got {value!r}")
        elif isinstance(default, float) and key != "eps":
            if isinstance(value, str):
                try:
                    out[key] = parse_eps(value)  # numbers and fractions such as '8/255' are accepted as text
                except (ConfigError, ValueError):
                    raise ConfigError(f"{label}.{key} must be a number (or a fraction like 8/255), got "
                                      f"{value!r}") from None
            elif isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"{label}.{key} must be a number, got {value!r}")
    return out


A = TypeVar("A", bound="AttackBase")


class AttackBase(metaclass=_FrozenAfterInit):
    """What every attack shares, whatever its task: keyword-only hyperparameters, frozen once built, and the
    call template that owns the invariants.

    Class attributes: ``name`` (registry name), ``task`` (what the victim does: ``classification``,
    ``detection``, ``multi-task dense prediction``), ``kind`` (``white-box``, ``black-box`` or
    ``transfer``).  A subclass for a new task writes the hooks :meth:`_check_call` (the input contract),
    :meth:`_run` (the attack) and :meth:`_check_output` (the output contract); it may widen
    :meth:`_models` (every module the attack queries) and :meth:`_generator` (where the randomness lives).
    """

    name: ClassVar[str] = ""
    task: ClassVar[str] = CLASSIFICATION
    kind: ClassVar[str] = "white-box"

    def __setattr__(self, key: str, value: Any) -> None:
        if self.__dict__.get("_frozen"):
            raise AttributeError(
                f"{type(self).__name__} is immutable once built; create a new attack to change '{key}'"
            )
        object.__setattr__(self, key, value)

    @classmethod
    def parameter_names(cls) -> list[str]:
        """The keyword arguments the constructor accepts (following ``**kwargs`` up to the base)."""
        names: list[str] = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            signature = inspect.signature(init).parameters
            names += [p for p, spec in signature.items()
                      if p != "self" and spec.kind not in (spec.VAR_KEYWORD, spec.VAR_POSITIONAL) and p not in names]
            if not any(spec.kind == spec.VAR_KEYWORD for spec in signature.values()):
                break
        return names

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments as resolved (JSON-friendly), for records and config hashes."""
        params = {p: getattr(self, p) if p in ("norm", "eps") else self.__dict__.get(p)
                  for p in self.parameter_names()}
        return {"name": self.name, **{k: v for k, v in sorted(params.items()) if _jsonable(v)}}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items() if k != "name")
        return f"{type(self).__name__}({params})"

    # -- the invariant-owning entry point ---------------------------------------------------------
    def __call__(self, model: nn.Module, x: Any, y: Any = None, *, target: Any = None,
                 generator: torch.Generator | None = None, progress: bool = False) -> Any:
        """Attack ``model`` at ``x`` with ground truth ``y`` (``target`` only in targeted mode).

        The randomness comes from ``generator`` only; ``progress`` shows a bar where the attack has a long
        loop of its own (fitting a patch)."""
        self._check_call(model, x, y, target)
        generator = self._generator(x, generator)
        states = [_freeze(m) for m in self._models(model)]
        try:
            out = self._run(model, x, y, target, generator, progress)
        finally:
            for m, state in zip(self._models(model), states, strict=True):
                _restore(m, state)
        self._check_output(x, out)
        return out

    def _check_call(self, model: nn.Module, x: Any, y: Any, target: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _generator(self, x: Any, generator: torch.Generator | None) -> torch.Generator:
        """The generator the attack draws from: ``generator`` on the input's device (see :func:`generator_for`)."""
        return generator_for(x.device, generator)

    def _models(self, model: nn.Module) -> list[nn.Module]:
        """Every module the call uses, frozen (eval mode, no parameter gradients) for its duration."""
        return [model]

    def _run(self, model: nn.Module, x: Any, y: Any, target: Any, generator: torch.Generator,
             progress: bool) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_output(self, x: Any, out: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class ThreatBudget:
    """Mixin of the attacks with a threat model (``self.threat``): their ``norm`` and ``eps``."""

    threat: ThreatModel

    @property
    def norm(self) -> str:
        return self.threat.norm

    @property
    def eps(self) -> float:
        return self.threat.eps


class Attack(AttackBase, ThreatBudget):
    """Base class of every classifier attack.  Subclasses set the class attributes and write ``_attack``.

    Class attributes: ``name`` (registry name), ``norms`` (supported norms), ``kind``
    (``'white-box'`` or ``'black-box'``), ``supports_targeted``.
    """

    norms: ClassVar[tuple[str, ...]] = NORMS
    supports_targeted: ClassVar[bool] = True

    def __init__(self, *, norm: str = "linf", eps: float | str = 8 / 255, targeted: bool = False,
                 early_stop: bool = True) -> None:
        if norm not in self.norms:
            raise ConfigError(
                f"attack '{self.name}' does not support norm '{norm}'; it supports {', '.join(self.norms)}"
            )
        self.threat = ThreatModel(norm, parse_eps(eps))
        if targeted and not self.supports_targeted:
            raise ConfigError(f"attack '{self.name}' has no targeted mode; use targeted=False")
        self.targeted = bool(targeted)
        self.early_stop = bool(early_stop)

    def with_eps(self, eps: float) -> Attack:
        """A copy of this attack with another budget (attacks are immutable)."""
        params = self.hyperparameters()
        params.pop("name")
        params["eps"] = eps
        return type(self)(**params)

    # -- the classifier's hooks of the call ------------------------------------------------------
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,  # type: ignore[override]
                 target: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 progress: bool = False) -> AttackOutput:
        """Attack ``model`` at ``x`` (true labels ``y``); ``target`` only in targeted mode."""
        return super().__call__(model, x, y, target=target, generator=generator, progress=progress)

    def _check_call(self, model: nn.Module, x: Any, y: Any, target: Any) -> None:
        """NCHW float batch in [0,1] and integer labels that fit the model; a target only in targeted mode."""
        validate_batch(x, y)
        expected = getattr(model, "input_shape", None)
        if expected is not None and tuple(x.shape[1:]) != tuple(expected):
            raise InputError(
                f"input of shape {tuple(x.shape)} does not fit the model, which expects (N, "
                f"{', '.join(map(str, expected))}); check the dataset and the model"
            )
        if target is not None and not self.targeted:
            raise ConfigError("a target was given to an untargeted attack; build it with targeted=True")

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator, progress: bool) -> AttackOutput:
        if self.targeted:
            target = self._resolve_target(model, x, y, target, generator)
        labels = target if self.targeted else y
        ctx = AttackContext(model, x, labels, targeted=self.targeted, threat=self.threat, generator=generator)
        raw = self._attack(ctx, x)
        if raw.adv_pred is None:
            raw.adv_pred = ctx.logits(raw.x_adv).argmax(dim=1)
        return self._finish(ctx, raw, target)

    def _resolve_target(self, model, x, y, target, generator) -> torch.Tensor:
        if target is not None:
            if not isinstance(target, torch.Tensor) or target.shape != y.shape:
                raise InputError(f"target must be a tensor of shape {tuple(y.shape)}")
            target = target.to(y.device)
            if bool((target == y).any()):
                raise InputError("a target equals the true label for some samples; pick other classes")
            return target
        with torch.no_grad():
            n_classes = model(x[:1]).shape[1]
        offset = torch.randint(1, n_classes, y.shape, generator=generator, device=y.device)
        return (y + offset) % n_classes

    def _finish(self, ctx: AttackContext, raw: RawResult, target: torch.Tensor | None) -> AttackOutput:
        x_adv = raw.x_adv.detach()
        labels = target if self.targeted else ctx.labels
        success = raw.adv_pred == labels if self.targeted else raw.adv_pred != labels
        step = raw.success_step
        if step is None:  # the attack does not track steps: report the gradient steps it spent on the sample
            step = ctx.n_gradients.clone()
        step = torch.where(success, step, torch.full_like(step, -1))
        return AttackOutput(
            x_adv=x_adv,
            success=success,
            success_step=step,
            n_gradients=ctx.n_gradients,
            n_queries=ctx.n_queries,
            adv_pred=raw.adv_pred,
            target=target,
            loss_trace=raw.loss_trace,
            weights=raw.weights,
            weight_trace=raw.weight_trace,
            extras=raw.extras,
        )

    def _check_output(self, x: Any, out: Any) -> None:
        """The adversarial batch has the input's shape and dtype, is finite and is an allowed point."""
        x_adv = out.x_adv
        if x_adv.shape != x.shape or x_adv.dtype != x.dtype:
            raise BudgetError(
                f"attack '{self.name}' returned shape {tuple(x_adv.shape)} / {x_adv.dtype}, "
                f"expected {tuple(x.shape)} / {x.dtype}"
            )
        if not bool(torch.isfinite(x_adv).all()):
            raise BudgetError(f"attack '{self.name}' returned non-finite values")
        inside = self.within_budget(x_adv, x, out.extras)
        if not bool(inside.all()):
            worst = self.threat.norm
            raise BudgetError(
                f"attack '{self.name}' left the {worst} ball of radius {self.threat.eps} or the [0,1] box "
                f"for {int((~inside).sum())} samples; this is a bug in the attack"
            )

    def within_budget(self, x_adv: torch.Tensor, x: torch.Tensor, extras: dict[str, Any]) -> torch.Tensor:
        """Per sample: is ``x_adv`` an allowed point?  The threat model's ball and box, unless an attack with
        another perturbation model (e.g. adversarial clouds) checks its own budgets from its ``extras``."""
        return self.threat.contains(x_adv, x)

    def _attack(self, ctx: AttackContext, x: torch.Tensor) -> RawResult:  # pragma: no cover - abstract
        raise NotImplementedError


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, tuple, dict))


def generator_for(device: torch.device, generator: torch.Generator | None) -> torch.Generator:
    """A generator on ``device``: the given one, or one seeded from it (or from 0) when devices differ.

    ``torch.Generator(device="cuda")`` reports ``cuda`` without an index; it counts as the current device."""
    device = torch.device(device)
    if generator is not None and _same_device(generator.device, device):
        return generator
    seed = 0 if generator is None else int(torch.randint(0, 2**62, (1,), generator=generator,
                                                          device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def _freeze(model: nn.Module) -> tuple[bool, list[bool]]:
    state = (model.training, [p.requires_grad for p in model.parameters()])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return state


def _restore(model: nn.Module, state: tuple[bool, list[bool]]) -> None:
    training, flags = state
    model.train(training)
    for p, flag in zip(model.parameters(), flags, strict=True):
        p.requires_grad_(flag)


#: Every attack of every task, by name (see :attr:`AttackBase.task`).
ATTACKS: Registry[type[AttackBase]] = Registry("attack")


def register_attack(name: str) -> Callable[[type[A]], type[A]]:
    """Class decorator: register an attack class (any :class:`AttackBase`) under ``name`` and set its ``name``."""

    def decorate(cls: type[A]) -> type[A]:
        cls.name = name
        ATTACKS.add(name, cls, task=cls.task)
        return cls

    return decorate


def check_attack_task(names: list[str], task: str, runner: str) -> None:
    """Refuse attacks of another task than ``task`` (e.g. a roof patch in a classifier run), naming where they run.

    Unknown names fail with the registry's list of known attacks."""
    import advbench.attacks  # noqa: F401  (registers every attack)

    wrong = [(name, ATTACKS.get(name).task) for name in names if ATTACKS.get(name).task != task]
    if wrong:
        found = ", ".join(f"'{name}' is a {other} attack" for name, other in wrong)
        raise ConfigError(f"the {runner} runs {task} attacks, but {found}; `advbench list attacks` shows each "
                          "attack's task, and a run picks its experiment from the attacks when none is named")
