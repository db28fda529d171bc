"""AutoAttack, the standard one: the reference implementation (``pyautoattack``) behind the advbench protocol.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", ICML 2020 (arXiv 2003.01690); the l1 version follows Croce & Hein, "Mind the box: l1-APGD for
sparse adversarial attacks on image classifiers", ICML 2021.

``autoattack`` runs the component attacks of ``pyautoattack.AutoAttack`` (the authors' code, packaged) as a
cascade: each component only sees the samples that every component before it failed to break.  The
components are the reference's own objects, built by ``pyautoattack.AutoAttack(model, norm=..., eps=...,
version=...)``, so every hyperparameter is the reference's.  What the adapter does instead of
``run_standard_evaluation``:

* The clean pass and the reference's checks for randomised, probability-output and dynamic models are
  left out: advbench's cascade (:func:`advbench.evaluate`) already drops misclassified samples and runs its
  own gradient-masking checks.  With ``early_stop`` the attack itself skips samples that are already
  misclassified (one query each).
* Randomness: the reference seeds torch's *global* generator with its ``seed`` before every component.
  The adapter draws that seed from the caller's explicit ``torch.Generator`` (:func:`seed_from_generator`)
  and runs the cascade inside ``torch.random.fork_rng``, so the global state is restored afterwards.  With
  the same seed and the same samples in one batch, the result equals the reference's
  ``run_standard_evaluation`` exactly.
* Targets: APGD-T and FAB-T aim at the top-k classes by logit other than the predicted one (ranks 2 to
  k + 1), never at all classes.  With fewer than k + 1 classes, k is ``n_classes - 1`` (the reference warns
  and then fails with an IndexError there).  The targeted DLR loss needs 4 classes and the DLR loss 3: on
  smaller models APGD-T / APGD-DLR are skipped (recorded in ``extras``).
* Every component's result is put onto the threat model's set (points the reference returns a rounding
  error outside the l2 or l1 ball are projected exactly with :meth:`ThreatModel.project`) and success is
  judged by the model on that point; the base class then checks the budget.
* Cost: a counting wrapper around the model counts forward passes (queries) and forward passes that are
  differentiated w.r.t. the input (gradients; FAB's untargeted step differentiates every logit of such a
  pass and counts once), spread evenly over the samples each component attacked.

Resolved hyperparameters (the reference's, pyautoattack 0.2.0; ``hyperparameters()['components']`` has
them as built):

* ``version='standard'``, linf and l2: APGD-CE (cross-entropy, 100 iterations, 1 restart, rho 0.75),
  APGD-T (targeted DLR, 100 iterations, 1 restart, 9 target classes), FAB-T (100 iterations, 1 restart,
  9 target classes, alpha_max 0.1, eta 1.05, beta 0.9), Square (5,000 queries, 1 restart, p_init 0.8,
  margin loss, no rescaled schedule).
* ``version='standard'``, l1: the same four, with l1-APGD: APGD-CE with 5 restarts and APGD-T with
  5 target classes, both with the decreasing-radius schedule (3, 2, 1 times eps for 30, 30 and 40 of the
  100 iterations); FAB-T and Square in l1 as above.
* ``version='plus'``: APGD-CE and APGD-DLR (5 restarts each), FAB (untargeted, 5 restarts), Square,
  APGD-T (9 targets, 1 restart), FAB-T (9 targets, 1 restart).
* ``version='rand'``, for randomised defenses: APGD-CE and APGD-DLR, 1 restart, each gradient averaged
  over 20 draws (EOT).

Cheap, non-standard runs (for tests and smoke runs): ``steps`` replaces the iterations of APGD and FAB,
``n_queries`` Square's query budget and ``n_target_classes`` the number of target classes of APGD-T and
FAB-T.  ``hyperparameters()['components']['reference_settings']`` is True only for the reference's
components at the reference's settings.

``targeted=True`` (linf and l2, version 'standard') is advbench's own targeted cascade, since the
reference is untargeted: native APGD on the targeted CE loss, then on the targeted DLR loss, then targeted
FAB and targeted Square (the torchattacks adapters), each on the samples that have not reached the target.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from advbench.attack import Attack, AttackContext, RawResult, register_attack
from advbench.attacks.torchattacks_adapter import spread_over_stages
from advbench.errors import ConfigError

VERSIONS = ("standard", "plus", "rand")
_REF_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}
_FAB_T_RESTARTS = 1  # run_standard_evaluation sets the shared FAB object to one restart before FAB-T
_DEFAULT_STEPS = 100  # the targeted cascade's iterations (the reference's APGD/FAB default)
_DEFAULT_QUERIES = 5000
_MIN_CLASSES = {"apgd-dlr": 3, "apgd-t": 4}  # DLR uses the 3rd largest logit, targeted DLR the 4th


def seed_from_generator(generator: torch.Generator) -> int:
    """The integer seed ``autoattack`` draws from ``generator`` for one call (one draw from it).

    ``pyautoattack.AutoAttack(..., seed=seed_from_generator(torch.Generator().manual_seed(s)))`` reproduces
    ``advbench.evaluate(..., attacks=['autoattack'], seed=s)`` when all samples fit one batch.
    """
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))


class _Counter:
    """The model as the reference calls it, counting forward passes and those differentiated w.r.t. the input.

    A plain callable rather than an ``nn.Module``: Square calls it 5,000 times per sample batch, and module
    call machinery would be pure overhead there."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.queries = 0
        self.gradients = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        if x.requires_grad and torch.is_grad_enabled():
            self.gradients += x.shape[0]
        return self.model(x)


def _positive_or_none(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or int(value) < 1:
        raise ConfigError(f"{name} must be a whole number >= 1 (or None for the reference's value), got {value}")
    return int(value)


def build_reference(model, *, norm: str, eps: float, version: str, seed: int = 0, device: Any = "cpu",
                    steps: int | None = None, n_queries: int | None = None,
                    n_target_classes: int | None = None):
    """``pyautoattack.AutoAttack(model, norm=..., eps=..., version=..., seed=..., device=...)`` with the
    optional overrides applied to its component attacks (``model`` may be None to read the settings)."""
    from pyautoattack import AutoAttack as Reference
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    ref = Reference(model, norm=_REF_NORM[norm], eps=eps, version=version, seed=seed, device=device)
    if steps is not None:  # APGD derives its checkpoint schedule from n_iter when built: build new ones
        old = ref.apgd
        ref.apgd = APGDAttack(model, n_iter=steps, norm=old.norm, n_restarts=old.n_restarts, eps=old.eps_orig,
                              seed=seed, loss=old.loss, eot_iter=old.eot_iter, rho=old.thr_decr, verbose=False,
                              device=device, use_largereps=old.use_largereps, logger=old.logger)
        old = ref.apgd_targeted
        ref.apgd_targeted = APGDAttack_targeted(
            model, n_iter=steps, norm=old.norm, n_restarts=old.n_restarts, eps=old.eps_orig, seed=seed,
            eot_iter=old.eot_iter, rho=old.thr_decr, n_target_classes=old.n_target_classes, verbose=False,
            device=device, use_largereps=old.use_largereps, logger=old.logger)
        ref.fab.n_iter = steps
    if n_queries is not None:
        ref.square.n_queries = n_queries
    if n_target_classes is not None:
        ref.apgd_targeted.n_target_classes = n_target_classes
        ref.fab.n_target_classes = n_target_classes
    return ref


def _largereps_schedule(n_iter: int) -> dict[str, list]:
    """The radius schedule l1-APGD uses (as the reference computes it from its iterations)."""
    iters = [math.ceil(0.3 * n_iter), math.ceil(0.3 * n_iter)]
    return {"eps_factors": [3.0, 2.0, 1.0], "iterations": [*iters, n_iter - sum(iters)]}


def describe_reference(ref) -> dict[str, Any]:
    """The settings each component of a reference AutoAttack object runs with, in cascade order."""
    out: dict[str, Any] = {"attacks": list(ref.attacks_to_run)}
    for name in ref.attacks_to_run:
        if name.startswith("apgd"):
            obj = ref.apgd_targeted if name == "apgd-t" else ref.apgd
            loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr-targeted"}[name]
            info = {"loss": loss, "n_iter": obj.n_iter_orig, "n_restarts": obj.n_restarts, "rho": obj.thr_decr,
                    "eot_iter": obj.eot_iter, "use_largereps": bool(obj.use_largereps)}
            if name == "apgd-t":
                info["n_target_classes"] = obj.n_target_classes
            if obj.use_largereps:
                info["largereps_schedule"] = _largereps_schedule(obj.n_iter_orig)
        elif name in ("fab", "fab-t"):
            fab = ref.fab
            info = {"n_iter": fab.n_iter, "n_restarts": _FAB_T_RESTARTS if name == "fab-t" else fab.n_restarts,
                    "alpha_max": fab.alpha_max, "eta": fab.eta, "beta": fab.beta}
            if name == "fab-t":
                info["n_target_classes"] = fab.n_target_classes
        elif name == "square":
            sq = ref.square
            info = {"n_queries": sq.n_queries, "n_restarts": sq.n_restarts, "p_init": sq.p_init, "loss": sq.loss,
                    "rescale_schedule": bool(sq.rescale_schedule)}
        else:  # pragma: no cover - the reference has no other components
            raise ConfigError(f"unknown AutoAttack component '{name}'")
        out[name] = info
    return out


def _run_component(ref, name: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """One component on (x, y), set up exactly as the reference's run_standard_evaluation sets it up."""
    if name in ("apgd-ce", "apgd-dlr"):
        ref.apgd.loss = name[5:]
        ref.apgd.seed = seed
        return ref.apgd.perturb(x, y)
    if name == "apgd-t":
        ref.apgd_targeted.seed = seed
        return ref.apgd_targeted.perturb(x, y)
    if name in ("fab", "fab-t"):
        ref.fab.targeted = name == "fab-t"
        if name == "fab-t":
            ref.fab.n_restarts = _FAB_T_RESTARTS
        ref.fab.seed = seed
        return ref.fab.perturb(x, y)
    ref.square.seed = seed
    return ref.square.perturb(x, y)


@register_attack("autoattack")
class AutoAttack(Attack):
    """Standard AutoAttack (Croce & Hein, ICML 2020) from the reference implementation; see the module
    docstring for the components and their resolved settings."""

    norms = ("linf", "l2", "l1")

    def __init__(self, *, norm: str = "linf", eps: float | str = 8 / 255, version: str = "standard",
                 targeted: bool = False, early_stop: bool = True, steps: int | None = None,
                 n_queries: int | None = None, n_target_classes: int | None = None) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, early_stop=early_stop)
        if version not in VERSIONS:
            raise ConfigError(f"autoattack version must be one of {', '.join(VERSIONS)}; got '{version}'")
        if targeted and (norm == "l1" or version != "standard"):
            raise ConfigError("targeted autoattack is advbench's own targeted cascade for linf and l2, "
                              "version 'standard'; use targeted=False for the reference's l1, plus or rand")
        self.version = version
        self.steps = _positive_or_none("steps", steps)
        self.n_queries = _positive_or_none("n_queries", n_queries)
        self.n_target_classes = _positive_or_none("n_target_classes", n_target_classes)
        self._components = self._describe()

    # -- settings ---------------------------------------------------------------------------------------------
    def _reference(self, model, seed: int = 0, device: Any = "cpu"):
        return build_reference(model, norm=self.norm, eps=self.eps, version=self.version, seed=seed, device=device,
                               steps=self.steps, n_queries=self.n_queries, n_target_classes=self.n_target_classes)

    def _describe(self) -> dict[str, Any]:
        custom = self.steps is not None or self.n_queries is not None or self.n_target_classes is not None
        if self.targeted:
            steps, queries = self.steps or _DEFAULT_STEPS, self.n_queries or _DEFAULT_QUERIES
            return {"implementation": "advbench targeted cascade", "reference_settings": False,
                    "attacks": ["apgd-ce", "apgd-dlr", "fab", "square"],
                    "apgd-ce": {"loss": "ce-targeted", "n_iter": steps, "rho": 0.75},
                    "apgd-dlr": {"loss": "dlr-targeted", "n_iter": steps, "rho": 0.75},
                    "fab": {"n_iter": steps, "n_restarts": 1, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9},
                    "square": {"n_queries": queries, "n_restarts": 1, "p_init": 0.8}}
        import pyautoattack

        return {"implementation": f"pyautoattack {pyautoattack.__version__}", "reference_settings": not custom,
                **describe_reference(self._reference(None))}

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments plus ``components``: every component's settings as resolved."""
        return {**super().hyperparameters(), "components": self._components}

    def with_eps(self, eps: float) -> AutoAttack:
        params = {k: v for k, v in self.hyperparameters().items() if k in self.parameter_names()}
        return type(self)(**{**params, "eps": eps})

    # -- the cascade --------------------------------------------------------------------------------------------
    def _into_set(self, adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Points already in ball ∩ box are kept bit for bit; the others are projected onto it."""
        inside = self.threat.contains(adv, x, atol=0.0).view(-1, *([1] * (x.ndim - 1)))
        return torch.where(inside, adv, self.threat.project(adv, x))

    def _attack(self, ctx: AttackContext, x: torch.Tensor) -> RawResult:
        if self.targeted:
            return self._targeted_cascade(ctx, x)
        n, dev = x.shape[0], x.device
        x_out = x.clone()
        active = torch.arange(n, device=dev)
        adv_pred, n_classes = None, None
        if self.early_stop:
            logits = ctx.logits(x)
            adv_pred, n_classes = logits.argmax(1), logits.shape[1]
            active = active[adv_pred == ctx.labels]
        if active.numel() == 0 or self.eps == 0:  # nothing left to attack, or the ball is the clean point
            return RawResult(x_adv=x_out, adv_pred=adv_pred)
        if adv_pred is None:
            adv_pred = ctx.labels.clone()  # a sample no component breaks is classified correctly at x
            n_classes = ctx.logits(x[:1], active[:1]).shape[1]
        seed = seed_from_generator(ctx.generator)
        counter = _Counter(ctx.model)
        stages: list[dict[str, Any]] = []
        devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            ref = self._reference(counter, seed=seed, device=dev)
            k_apgd = min(ref.apgd_targeted.n_target_classes, n_classes - 1)
            k_fab = min(ref.fab.n_target_classes, n_classes - 1)
            ref.apgd_targeted.n_target_classes, ref.fab.n_target_classes = k_apgd, k_fab
            for name in ref.attacks_to_run:
                if n_classes < _MIN_CLASSES.get(name, 2):
                    stages.append({"attack": name, "skipped": f"needs {_MIN_CLASSES[name]} classes"})
                    continue
                if active.numel() == 0:
                    break
                queries, gradients = counter.queries, counter.gradients
                xa, ya = x[active], ctx.labels[active]
                adv = _run_component(ref, name, xa, ya, seed).detach().to(x.dtype)
                adv = self._into_set(adv, xa)
                with torch.no_grad():
                    pred = counter(adv).argmax(1)
                fooled = pred != ya
                spread_over_stages(counter.queries - queries, active, ctx.n_queries)
                spread_over_stages(counter.gradients - gradients, active, ctx.n_gradients)
                won = active[fooled]
                x_out[won], adv_pred[won] = adv[fooled], pred[fooled]
                stages.append({"attack": name, "attacked": int(active.numel()), "broken": int(fooled.sum())})
                active = active[~fooled]
        extras = {"autoattack": {"seed": seed, "n_classes": n_classes, "stages": stages,
                                 "n_target_classes": {"apgd-t": k_apgd, "fab-t": k_fab}}}
        return RawResult(x_adv=x_out, adv_pred=adv_pred, extras=extras)

    def _targeted_cascade(self, ctx: AttackContext, x: torch.Tensor) -> RawResult:
        """The reference is untargeted: native APGD on the targeted CE loss, then on the targeted DLR loss, then
        targeted FAB and targeted Square, each only on the samples that have not reached the target yet."""
        from advbench.attacks.torchattacks_adapter import FAB, Square, native_apgd

        steps = self.steps or _DEFAULT_STEPS
        stages = [native_apgd(self, "ce", steps=steps), native_apgd(self, "dlr", steps=steps),
                  FAB(norm=self.norm, eps=self.eps, steps=steps, targeted=True),
                  Square(norm=self.norm, eps=self.eps, n_queries=self.n_queries or _DEFAULT_QUERIES, targeted=True)]
        x_out = x.clone()
        left = torch.arange(x.shape[0], device=x.device)
        for stage in stages:
            sub = AttackContext(ctx.model, x[left], ctx.labels[left], targeted=True, threat=self.threat,
                                generator=ctx.generator)
            raw = stage._attack(sub, x[left])
            ctx.n_queries[left] += sub.n_queries
            ctx.n_gradients[left] += sub.n_gradients
            x_out[left] = raw.x_adv
            reached = ctx.logits(raw.x_adv, left).argmax(1) == ctx.labels[left]
            left = left[~reached]
            if left.numel() == 0:
                break
        return RawResult(x_adv=x_out)
