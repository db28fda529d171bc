"""Adversarial roof patches against vehicle detectors: white-box, transfer, random search and min-max.

All four learn one universal patch (3, P, P) in [0, 1] that, pasted on every vehicle's roof (see
:mod:`advbench.attacks.patches`), hides the vehicles from a detector.  The objective is
``mean vehicle score + nps_weight · NPS + tv_weight · TV`` (Thys et al., CVPRW 2019).

* ``patch-whitebox`` -- Adam (lr 0.03) on random minibatches pooled over all altitudes, with Thys jitter.
* ``patch-transfer`` -- the same optimisation against a *surrogate* detector; the victim is never queried.
* ``patch-random-search`` -- query-only: Square-attack-style (Andriushchenko et al., ECCV 2020) random
  square recolourings of the patch, kept when they lower the score; stops at ``queries`` detector image
  evaluations.
* ``patch-minmax`` -- the APGDA engine (Wang et al., NeurIPS 2021, :mod:`advbench.minmax`) with the
  altitude groups (and, where given, several detectors) as domains: it minimises the *worst* domain's
  score and reports the learned simplex weights.  Its descent direction is Adam's, with the same lr, so it
  differs from ``patch-whitebox`` only in how domains are weighted.

They are registered in :data:`advbench.attack.ATTACKS` with the task ``detection``; build one with
``advbench.create_attack(name, ...)`` and call it as ``attack(detector, patch_set, generator=...)``, which
returns a :class:`PatchFit`.  Every random draw (minibatches, jitter, proposals) comes from that generator,
which stays on the CPU whatever the detector's device, so one seed learns the same patch on a GPU as on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from advbench.attack import AttackBase, generator_for, register_attack
from advbench.attacks.patch_losses import DEFAULT_PALETTE, non_printability, total_variation, vehicle_scores
from advbench.attacks.patches import (
    NO_JITTER,
    PatchPlacement,
    PatchTransform,
    apply_patch_each,
    init_patch,
    rotated_or_axis_boxes,
)
from advbench.datasets.detection import DetectionSample
from advbench.detection.metrics import match_detected
from advbench.errors import BudgetError, ConfigError, InputError
from advbench.minmax import APGDA
from advbench.progress import progress_bar
from advbench.task_names import DETECTION

if TYPE_CHECKING:  # torchvision is slow to import: the detectors come with the model, at call time
    from advbench.models.detectors import Detector

#: Width of the soft detection threshold (see :meth:`PatchAttack.image_scores`).
SOFT_TEMPERATURE = 0.1

@dataclass
class PatchSet:
    """The attack's working set: images in memory, the vehicles to patch and a group label per image."""

    images: list[torch.Tensor]
    rboxes: list[torch.Tensor]
    boxes: list[torch.Tensor]
    groups: list[str]

    @classmethod
    def from_samples(cls, samples: Sequence[DetectionSample], images: Sequence[torch.Tensor] | None = None,
                     group_by: str = "altitude") -> PatchSet:
        """Build from loaded samples (``images`` defaults to reading them); images without vehicles are dropped."""
        keep = [i for i, s in enumerate(samples) if len(s)]
        if not keep:
            raise InputError("no image has a vehicle to patch; check the data set and its filters")
        imgs = [images[i] if images is not None else samples[i].load_image() for i in keep]
        groups = [str(getattr(samples[i], group_by) or "all") for i in keep]
        return cls(images=imgs, rboxes=[rotated_or_axis_boxes(samples[i].boxes, samples[i].rotated_boxes)
                                        for i in keep],
                   boxes=[samples[i].boxes for i in keep], groups=groups)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def group_names(self) -> list[str]:
        return sorted(set(self.groups))

    def to(self, device: torch.device | str) -> PatchSet:
        """This set with its images and boxes on ``device`` (itself when they are already there)."""
        dev = torch.device(device)
        tensors = (*self.images, *self.rboxes, *self.boxes)
        if all(t.device == dev for t in tensors):
            return self
        return PatchSet(images=[t.to(dev) for t in self.images], rboxes=[t.to(dev) for t in self.rboxes],
                        boxes=[t.to(dev) for t in self.boxes], groups=list(self.groups))


@dataclass
class PatchFit:
    """The learned patch and what the attack reports about its optimisation."""

    patch: torch.Tensor
    history: list[float]
    info: dict[str, Any] = field(default_factory=dict)


class PatchAttack(AttackBase):
    """Base class: hyperparameters, the objective, and minibatch sampling.  Subclasses implement ``_fit``.

    ``kind`` says how the attack reaches the victim: ``white-box`` (its gradients), ``transfer`` or
    ``black-box`` (queries)."""

    task: ClassVar[str] = DETECTION

    def __init__(self, *, patch_size: int = 24, steps: int = 150, lr: float = 0.03, batch_size: int = 6,
                 score: str = "class", reduction: str = "vehicle", nps_weight: float = 0.01,
                 tv_weight: float = 2.5, fraction: tuple[float, float] = (0.5, 0.8), jitter: bool = True,
                 match_iou: float = 0.3, palette: torch.Tensor | None = None,
                 soft_threshold: float | None = None, footprint_filter: bool = False) -> None:
        for name, value in (("steps", steps), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not lr > 0:
            raise ConfigError(f"lr must be > 0, got {lr!r}")
        if nps_weight < 0 or tv_weight < 0:
            raise ConfigError(f"nps_weight and tv_weight must be >= 0, got {nps_weight}, {tv_weight}")
        init_patch(patch_size)  # validates patch_size
        self.patch_size, self.steps, self.lr, self.batch_size = patch_size, steps, lr, batch_size
        self.score, self.reduction, self.match_iou = score, reduction, match_iou
        self.nps_weight, self.tv_weight = nps_weight, tv_weight
        if not isinstance(footprint_filter, bool):
            raise ConfigError(f"footprint_filter must be true or false, got {footprint_filter!r}")
        self.placement = PatchPlacement(tuple(fraction), footprint_filter=footprint_filter)
        self.transform = PatchTransform() if jitter else NO_JITTER
        self.palette = DEFAULT_PALETTE if palette is None else palette
        vehicle_scores([], [], kind=score, reduction=reduction)  # validates score and reduction
        if soft_threshold is not None and not 0 < soft_threshold < 1:
            raise ConfigError(f"soft_threshold must lie in (0, 1) (a detection score threshold), got {soft_threshold}")
        self.soft_threshold = soft_threshold

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-ready hyperparameters (stored with every record)."""
        hyper = {"name": self.name, "patch_size": self.patch_size, "steps": self.steps, "lr": self.lr,
                 "batch_size": self.batch_size,
                 "score": self.score, "reduction": self.reduction, "nps_weight": self.nps_weight,
                 "tv_weight": self.tv_weight, "fraction": list(self.placement.fraction),
                 "jitter": self.transform != NO_JITTER, "match_iou": self.match_iou,
                 "soft_threshold": self.soft_threshold}
        if self.placement.footprint_filter:  # only when on, so records made before the option still match
            hyper["footprint_filter"] = True
        return hyper

    # -- the objective -------------------------------------------------------------------------------
    def regulariser(self, patch: torch.Tensor) -> torch.Tensor:
        """``nps_weight · NPS + tv_weight · TV`` of a (3, P, P) patch."""
        return self.nps_weight * non_printability(patch, self.palette) + self.tv_weight * total_variation(patch)

    def image_scores(self, detector: Detector, patch: torch.Tensor, data: PatchSet, idx: Sequence[int],
                     gen: torch.Generator | None, *, jitter: bool = True) -> torch.Tensor:
        """Mean vehicle score (B,) of the patched images ``idx``; differentiable w.r.t. ``patch``.

        With ``soft_threshold = t`` each vehicle's score ``s`` counts as ``sigmoid((s - t) / 0.1)``, a smooth
        "still detected" indicator, so the mean estimates the share of vehicles the detector still finds
        (``1 - ASR``) instead of their average confidence."""
        return torch.stack([v.mean() for v in self.vehicle_scores(detector, patch, data, idx, gen, jitter=jitter)])

    def vehicle_scores(self, detector: Detector, patch: torch.Tensor, data: PatchSet, idx: Sequence[int],
                       gen: torch.Generator | None, *, jitter: bool = True) -> list[torch.Tensor]:
        """Per patched image ``idx``, the score of each of its vehicles (soft-thresholded if asked)."""
        transform = self.transform if jitter else NO_JITTER
        patched = apply_patch_each([data.images[i] for i in idx], patch, [data.rboxes[i] for i in idx],
                                   self.placement, transform, gen)
        cands = detector.candidates(patched)
        per_vehicle = vehicle_scores(cands, [data.boxes[i] for i in idx], kind=self.score,
                                     match_iou=self.match_iou, reduction=self.reduction)
        if self.soft_threshold is not None:
            per_vehicle = [torch.sigmoid((v - self.soft_threshold) / SOFT_TEMPERATURE) for v in per_vehicle]
        return per_vehicle

    def adam_step(self, detector: Detector, patch: torch.Tensor, opt: torch.optim.Optimizer, data: PatchSet,
                  idx: Sequence[int], gen: torch.Generator | None) -> float:
        """One optimiser step on ``patch`` (a leaf) for the images ``idx``; returns the objective before it.

        Only the patch's gradient is computed (``autograd.grad``): the detector's weights get no ``.grad`` and
        no weight-gradient work is done."""
        loss = self.image_scores(detector, patch, data, idx, gen).mean() + self.regulariser(patch)
        (grad,) = torch.autograd.grad(loss, patch)
        patch.grad = grad
        opt.step()
        with torch.no_grad():
            patch.clamp_(0, 1)
        return loss.item()

    # -- the call: invariants of a patch attack --------------------------------------------------------
    def __call__(self, model: nn.Module, x: Any, y: Any = None, *, target: Any = None,  # type: ignore[override]
                 generator: torch.Generator | None = None, progress: bool = False) -> PatchFit:
        """Learn a patch against the detector ``model`` on the :class:`PatchSet` ``x`` (it carries the
        vehicles, so ``y`` stays None)."""
        return super().__call__(model, x, y, target=target, generator=generator, progress=progress)

    def _check_call(self, model: nn.Module, x: Any, y: Any, target: Any) -> None:
        from advbench.models.detectors import Detector

        if not isinstance(model, Detector):
            raise InputError(f"'{self.name}' attacks a Detector (advbench.models.detectors), got "
                             f"{type(model).__name__}")
        if not isinstance(x, PatchSet):
            raise InputError(f"'{self.name}' learns a patch on a PatchSet (PatchSet.from_samples(...)), got "
                             f"{type(x).__name__}")
        if not len(x):
            raise InputError("the patch set is empty: no image has a vehicle to patch")
        if y is not None or target is not None:
            raise ConfigError(f"'{self.name}' reads the vehicles from the PatchSet; pass no labels or target")

    def _generator(self, x: Any, generator: torch.Generator | None) -> torch.Generator:
        """A CPU generator whatever the detector's device: the given one, or one seeded from it (or from 0)."""
        return generator_for(torch.device("cpu"), generator)

    def _run(self, model: nn.Module, x: Any, y: Any, target: Any, generator: torch.Generator,
             progress: bool) -> PatchFit:
        return self._fit(model, x, generator, progress)

    def _check_output(self, x: Any, out: Any) -> None:
        """A (3, P, P) patch, finite, in [0, 1]: a printable image."""
        patch = out.patch
        size = self.patch_size
        if tuple(patch.shape) != (3, size, size) or not bool(torch.isfinite(patch).all()):
            raise BudgetError(f"attack '{self.name}' returned a patch of shape {tuple(patch.shape)} (expected "
                              f"(3, {size}, {size})) or with non-finite values")
        if float(patch.min()) < 0 or float(patch.max()) > 1:
            raise BudgetError(f"attack '{self.name}' returned a patch outside [0, 1]; this is a bug in the attack")

    def _fit(self, detector: Detector, data: PatchSet, gen: torch.Generator, progress: bool) -> PatchFit:
        """Learn a patch against ``detector`` on ``data``, drawing from ``gen``."""
        raise NotImplementedError

    def _start(self, device: torch.device) -> torch.Tensor:
        """The initial patch on ``device``: mid-gray, so the start has no randomness."""
        return init_patch(self.patch_size, kind="gray").to(device)


def _adam_fit(attack: PatchAttack, detector: Detector, data: PatchSet, gen: torch.Generator, progress: bool,
              desc: str) -> PatchFit:
    """Thys-style optimisation: Adam on random pooled minibatches, the patch clamped to [0, 1] after each step.

    It runs on ``detector``'s device; the learned patch comes back on the CPU."""
    start = attack._start(detector.device)
    data = data.to(detector.device)
    patch = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([patch], lr=attack.lr)
    history = []
    bar = progress_bar(total=attack.steps, desc=desc, unit="step", enabled=progress)
    try:
        for _ in range(attack.steps):
            idx = torch.randint(len(data), (min(attack.batch_size, len(data)),), generator=gen).tolist()
            history.append(attack.adam_step(detector, patch, opt, data, idx, gen))
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.3f}", refresh=False)
    finally:
        bar.close()
    return PatchFit(patch=patch.detach().cpu(), history=history, info={"detector_queries": 0})


@register_attack("patch-whitebox")
class WhiteBoxPatch(PatchAttack):
    """White-box patch (Thys et al. 2019): gradients of the victim itself, altitudes pooled."""

    def _fit(self, detector: Detector, data: PatchSet, gen: torch.Generator, progress: bool) -> PatchFit:
        return _adam_fit(self, detector, data, gen, progress, self.name)


@register_attack("patch-transfer")
class TransferPatch(PatchAttack):
    """Black-box transfer: the white-box recipe run on ``surrogate``; the victim is only evaluated."""

    kind: ClassVar[str] = "transfer"

    def __init__(self, *, surrogate: Detector | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.surrogate = surrogate

    def hyperparameters(self) -> dict[str, Any]:
        arch = None if self.surrogate is None else self.surrogate.arch
        return {**super().hyperparameters(), "surrogate": arch}

    def _check_call(self, model: nn.Module, x: Any, y: Any, target: Any) -> None:
        super()._check_call(model, x, y, target)
        if self.surrogate is None:
            raise ConfigError("patch-transfer needs a surrogate detector (--surrogate ARCH|CKPT), different from "
                              "the victim")
        if self.surrogate is model:
            raise ConfigError("patch-transfer's surrogate is the victim itself; that is patch-whitebox")

    def _models(self, model: nn.Module) -> list[nn.Module]:
        return [model] if self.surrogate is None else [model, self.surrogate]

    def _fit(self, detector: Detector, data: PatchSet, gen: torch.Generator, progress: bool) -> PatchFit:
        assert self.surrogate is not None  # checked by _check_call
        fit = _adam_fit(self, self.surrogate, data, gen, progress, f"{self.name} ({self.surrogate.arch})")
        fit.info["surrogate"] = self.surrogate.arch
        return fit


@register_attack("patch-random-search")
class RandomSearchPatch(PatchAttack):
    """Query-based black box: random square recolourings of the patch, kept when the score drops.

    ``queries`` bounds the detector evaluations (one per image scored); each proposal is scored on the
    same ``search_images`` images, without jitter, so proposals compare fairly.  The square's side shrinks
    from ``p_init`` of the patch area following the Square attack's schedule.
    """

    kind: ClassVar[str] = "black-box"

    def __init__(self, *, queries: int = 1200, search_images: int = 6, p_init: float = 0.3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
            raise ConfigError(f"queries (detector image evaluations) must be a positive integer, got {queries!r}")
        if not 0 < p_init <= 1:
            raise ConfigError(f"p_init must lie in (0, 1], got {p_init}")
        self.queries, self.search_images, self.p_init = queries, int(search_images), p_init

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "queries": self.queries, "search_images": self.search_images,
                "p_init": self.p_init}

    def _side(self, used: int) -> int:
        frac = self.p_init * 0.5 ** math.floor(8 * used / self.queries)  # halves 8 times over the budget
        return max(1, round(math.sqrt(frac) * self.patch_size))

    @torch.no_grad()
    def _fit(self, detector: Detector, data: PatchSet, gen: torch.Generator, progress: bool) -> PatchFit:
        patch = self._start(detector.device)
        data, palette = data.to(detector.device), self.palette.to(detector.device)
        n = min(self.search_images, len(data))
        if n > self.queries:
            raise ConfigError(f"queries={self.queries} cannot score even one proposal on {n} images; raise it")
        idx = torch.randperm(len(data), generator=gen)[:n].tolist()

        def loss(p: torch.Tensor) -> float:
            return float(self.image_scores(detector, p, data, idx, None, jitter=False).mean() + self.regulariser(p))

        best, used, accepted = loss(patch), n, 0
        history = [best]
        bar = progress_bar(total=self.queries, desc=self.name, unit="query", enabled=progress)
        bar.update(n)
        try:
            while used + n <= self.queries:
                side = self._side(used)
                top, left = (int(torch.randint(self.patch_size - side + 1, (1,), generator=gen)) for _ in range(2))
                colour = palette[int(torch.randint(len(palette), (1,), generator=gen))]
                proposal = patch.clone()
                proposal[:, top:top + side, left:left + side] = colour.view(3, 1, 1)
                value = loss(proposal)
                used += n
                if value < best:
                    patch, best, accepted = proposal, value, accepted + 1
                history.append(best)
                bar.update(n)
                bar.set_postfix(loss=f"{best:.3f}", refresh=False)
        finally:
            bar.close()
        return PatchFit(patch=patch.cpu(), history=history,
                        info={"detector_queries": used, "accepted": accepted, "proposals": len(history) - 1})


class _AdamDirection:
    """Adam's bias-corrected update direction, as the APGDA engine's ``direction`` callable (lr = 1/alpha)."""

    def __init__(self, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
        self.b1, self.b2, self.eps, self.t = b1, b2, eps, 0
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        if self.m is None or self.v is None:
            self.m, self.v = torch.zeros_like(grad), torch.zeros_like(grad)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat = self.m / (1 - self.b1 ** self.t)
        v_hat = self.v / (1 - self.b2 ** self.t)
        return m_hat / (v_hat.sqrt() + self.eps)


class _AltitudeDomains:
    """Domains = (detector, altitude group) pairs; one stratified, jittered minibatch per evaluation.

    With ``signal="detection-rate"`` the value each domain reports to the weight update is a running
    estimate (exponential average, factor ``RATE_MEMORY``) of the share of its vehicles -- those the detector
    finds on the clean image -- still scored above ``score_threshold`` with the patch on: ``1 - ASR`` on the
    minibatches seen so far.  The gradient is still the score loss's (the rate enters as a constant), so only
    *which* domain is weighted changes: the one the patch fools least, rather than the one with the highest
    mean score.
    """

    RATE_MEMORY = 0.8

    def __init__(self, attack: PatchAttack, detectors: Sequence[Detector], data: PatchSet, per_group: int,
                 gen: torch.Generator, score_threshold: float, signal: str = "loss") -> None:
        self.attack, self.detectors, self.data, self.gen = attack, list(detectors), data, gen
        self.per_group, self.threshold, self.signal = per_group, score_threshold, signal
        self.groups = data.group_names
        self.members = {g: [i for i, gi in enumerate(data.groups) if gi == g] for g in self.groups}
        multi = len(self.detectors) > 1
        self.names = [f"{d.arch}@{g}" if multi else g for d in self.detectors for g in self.groups]
        self.rates: list[float | None] = [None] * len(self.names)
        self.found_clean: list[list[torch.Tensor]] = []
        if signal == "detection-rate":
            self.found_clean = [self._found_clean(det) for det in self.detectors]

    def _found_clean(self, det: Detector, batch: int = 8) -> list[torch.Tensor]:
        """Per training image, which vehicles ``det`` finds on the clean image (as the ASR counts them)."""
        out = []
        with torch.no_grad():
            for start in range(0, len(self.data), batch):
                idx = list(range(start, min(start + batch, len(self.data))))
                dets = det.detect([self.data.images[i] for i in idx])
                out += [match_detected(self.data.boxes[i], d["boxes"], d["scores"], score_threshold=self.threshold)
                        for i, d in zip(idx, dets, strict=True)]
        return out

    def _rate(self, k: int, found: list[torch.Tensor], scores: list[torch.Tensor]) -> float | None:
        kept = [(s.detach().cpu() >= self.threshold)[f.cpu()] for f, s in zip(found, scores, strict=True)]
        total = sum(int(f.sum()) for f in found)
        if total:
            now = sum(int(x.sum()) for x in kept) / total
            prev = self.rates[k]
            self.rates[k] = now if prev is None else self.RATE_MEMORY * prev + (1 - self.RATE_MEMORY) * now
        return self.rates[k]

    def evaluate(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patch = delta[0]
        picks = []
        for g in self.groups:
            pool = self.members[g]
            order = torch.randint(len(pool), (self.per_group,), generator=self.gen).tolist()
            picks.append([pool[j] for j in order])
        reg = self.attack.regulariser(patch)
        losses, success = [], []
        for d, det in enumerate(self.detectors):
            for g, idx in enumerate(picks):
                per_vehicle = self.attack.vehicle_scores(det, patch, self.data, idx, self.gen)
                scores = torch.stack([v.mean() for v in per_vehicle])
                loss = scores.mean() + reg
                if self.signal == "detection-rate":
                    rate = self._rate(d * len(picks) + g, [self.found_clean[d][i] for i in idx], per_vehicle)
                    if rate is not None:  # the weights see the rate, the patch the loss's gradient
                        loss = loss - loss.detach() + rate
                losses.append(loss)
                success.append(bool((scores < self.threshold).all()))
        return torch.stack(losses).unsqueeze(0), torch.tensor([success], device=patch.device)


@register_attack("patch-minmax")
class MinMaxPatch(PatchAttack):
    """Min-max patch over altitude groups (and ``detectors``, if several): APGDA with Adam directions.

    Each step draws ``ceil(batch_size / K_altitudes)`` images per altitude, so a step costs about what a
    ``patch-whitebox`` step costs.  ``beta`` and ``gamma`` are the engine's weight step (inverse) and
    regulariser (Wang, Zhang, Liu et al., NeurIPS 2021); the learned weights and their trace are reported in ``info``.
    ``weight_signal="loss"`` (the paper's rule) moves the weights by each domain's loss;
    ``"detection-rate"`` by its measured share of still-detected vehicles (see :class:`_AltitudeDomains`),
    reported as ``info["detection_rates"]``.
    """

    WEIGHT_SIGNALS = ("loss", "detection-rate")

    def __init__(self, *, detectors: Sequence[Detector] = (), beta: float = 5.0, gamma: float = 1.0,
                 score_threshold: float = 0.5, weight_signal: str = "loss", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if weight_signal not in self.WEIGHT_SIGNALS:
            raise ConfigError(f"weight_signal must be one of {', '.join(self.WEIGHT_SIGNALS)}, got {weight_signal!r}")
        if weight_signal == "detection-rate" and self.reduction != "vehicle":
            raise ConfigError("weight_signal='detection-rate' counts the vehicles still detected, so it needs "
                              f"reduction='vehicle', not {self.reduction!r}")
        self.weight_signal = weight_signal
        self.extra_detectors = list(detectors)
        self.engine = APGDA(steps=self.steps, alpha=1.0 / self.lr, beta=beta, gamma=gamma)
        self.score_threshold = score_threshold

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "beta": self.engine.beta, "gamma": self.engine.gamma,
                "weight_signal": self.weight_signal, "detectors": [d.arch for d in self.extra_detectors]}

    def _models(self, model: nn.Module) -> list[nn.Module]:
        return [model] + [d for d in self.extra_detectors if d is not model]

    def _fit(self, detector: Detector, data: PatchSet, gen: torch.Generator, progress: bool) -> PatchFit:
        start = self._start(detector.device)
        detectors = [detector] + [d for d in self.extra_detectors if d is not detector]
        elsewhere = [f"{d.arch} on {d.device}" for d in detectors if d.device != detector.device]
        if elsewhere:
            raise ConfigError(f"patch-minmax needs every detector on the victim's device ({detector.device}); "
                              f"move {', '.join(elsewhere)} there with .to(device)")
        data = data.to(detector.device)
        groups = data.group_names
        per_group = max(1, math.ceil(self.batch_size / len(groups)))
        domains = _AltitudeDomains(self, detectors, data, per_group, gen, self.score_threshold, self.weight_signal)
        bar = progress_bar(total=self.steps, desc=self.name, unit="step", enabled=progress)
        direction = _AdamDirection()

        def tracked(grad: torch.Tensor) -> torch.Tensor:
            bar.update(1)
            return direction(grad)

        try:
            result = self.engine.run(domains, start[None], lambda d: d.clamp(0, 1), tracked)
        finally:
            bar.close()
        weights = result.weights[0].tolist()
        trace = result.weight_trace[:, 0].tolist()
        history = [max(row) for row in result.loss_trace[:, 0].tolist()]
        info = {"domains": domains.names, "weights": dict(zip(domains.names, weights, strict=True)),
                "weight_trace": trace, "final_domain_losses": result.losses[0].tolist(), "detector_queries": 0}
        if self.weight_signal == "detection-rate":
            info["detection_rates"] = dict(zip(domains.names, domains.rates, strict=True))
        return PatchFit(patch=result.delta[0].cpu(), history=history, info=info)
