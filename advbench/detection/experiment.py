"""``advbench detect-attack``: learn a roof patch on a training split, then measure it on held-out images.

The protocol (EVD4UAV, Sun, Guo et al., arXiv 2403.05422, REFERENCE.md §4):

1. split the data set per altitude (seeded) into a patch-training part and a held-out test part;
2. learn the patch with the chosen attack against the victim (or its surrogate, for ``patch-transfer``);
3. on the test images, detect on the clean image and on the image with the patch on every vehicle roof;
   ASR = vehicles found on clean (IoU >= 0.5, score >= threshold) but missed after / vehicles found on clean;
   AP50 and mAP before and after (pycocotools); everything per altitude, colour and type;
4. a *control* row pastes a random-noise patch of the same size, so occlusion alone is not read as an attack.

The record (config, metrics, cost, one row per test vehicle) goes to the results store through
:func:`advbench.runner.execute`, so a stored configuration is not recomputed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advbench.datasets.detection import DetectionSample, load_detection_dataset
from advbench.detection.detectors import DETECTORS, Detector
from advbench.detection.metrics import attack_success, coco_map, coco_map_by
from advbench.detection.patch_attacks import PATCH_ATTACKS, PatchAttack, PatchFit, PatchSet, create_patch_attack
from advbench.detection.patches import NO_JITTER, apply_patch_each, rotated_or_axis_boxes
from advbench.detection.training import DetectorTrainConfig, load_detector, train_detector
from advbench.devices import check_device
from advbench.errors import ConfigError, InputError
from advbench.progress import progress_bar
from advbench.runner import RunOutcome, device_entry, execute, make_record


@dataclass
class DetectAttackSpec:
    """One detect-attack run.  ``detector`` (and ``surrogate``, ``extra_detectors``) is a checkpoint path or
    a registered architecture name, which is then trained on the training split first (seeded)."""

    dataset: str
    detector: str
    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    surrogate: str | None = None
    extra_detectors: list[str] = field(default_factory=list)
    train_fraction: float = 0.5
    score_threshold: float = 0.5
    iou: float = 0.5
    seed: int = 0
    max_images: int | None = None
    detector_epochs: int = 60
    #: For bare weights without advbench metadata: the architecture and ``(width, height)`` they were trained at
    #: (the classes are the data set's).
    detector_arch: str | None = None
    image_size: tuple[int, int] | None = None
    #: Learn the patch on these altitude groups' training images only (EVD4UAV's cross-altitude study); the
    #: held-out images of every altitude are still measured.  ``None``: every altitude.
    patch_altitudes: list[str] | None = None
    #: Where the detectors train, learn the patch and detect (``cpu``, ``cuda``, ``cuda:1``).  A seed draws the
    #: same batches and jitter on every device; float rounding differs, so off the CPU the device type is part
    #: of the stored configuration (see :func:`advbench.runner.device_entry`).
    device: str = "cpu"

    def __post_init__(self) -> None:
        PATCH_ATTACKS.get(self.attack)  # an unknown name fails here, listing the known ones
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"train_fraction must lie in (0, 1), got {self.train_fraction}")
        if not 0 <= self.score_threshold <= 1 or not 0 < self.iou <= 1:
            raise ConfigError(f"score_threshold must lie in [0, 1] and iou in (0, 1]; got {self.score_threshold}, "
                              f"{self.iou}")
        check_device(self.device)
        if self.attack == "patch-transfer" and not self.surrogate:
            raise ConfigError("patch-transfer needs --surrogate (a checkpoint or architecture other than the victim)")


def split_by_group(samples: Sequence[DetectionSample], train_fraction: float, seed: int,
                   key: str = "altitude") -> tuple[list[DetectionSample], list[DetectionSample]]:
    """A seeded split that keeps each ``key`` group's share in both parts (every group gets >= 1 test image)."""
    gen = torch.Generator().manual_seed(seed)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(str(getattr(s, key) or "all"), []).append(i)
    train, test = [], []
    for name in sorted(groups):
        members = groups[name]
        order = [members[j] for j in torch.randperm(len(members), generator=gen).tolist()]
        cut = min(len(order) - 1, max(1, round(train_fraction * len(order)))) if len(order) > 1 else 0
        train += order[:cut]
        test += order[cut:]
    if not train:
        raise InputError(f"the data set has too few images ({len(samples)}) to split into training and test parts")
    return [samples[i] for i in sorted(train)], [samples[i] for i in sorted(test)]


def _altitude_subset(samples: Sequence[DetectionSample], altitudes: Sequence[str]) -> list[DetectionSample]:
    """The samples whose altitude is one of ``altitudes``; an altitude the training split lacks is an error."""
    present = sorted({str(s.altitude) for s in samples})
    wanted = set(altitudes)
    if not wanted or not wanted <= set(present):
        raise InputError(f"patch altitudes {list(altitudes)}: the training split has altitudes {present}; "
                         "pick some of those")
    return [s for s in samples if str(s.altitude) in wanted]


@dataclass
class DetectorSource:
    """Where a detector comes from: its identity (goes into the run's config) and how to get it.

    A checkpoint is loaded at once (cheap, and its classes are checked early); a registered architecture is
    trained on the training split only when :meth:`get` is first called, so a run already in the results
    store never pays for the training.
    """

    identity: dict[str, Any]
    _train: Callable[[], tuple[Detector, dict[str, Any]]] | None = None
    _detector: Detector | None = None
    training: dict[str, Any] | None = None

    def get(self) -> Detector:
        if self._detector is None:
            assert self._train is not None
            self._detector, summary = self._train()
            self.training = {"arch": self.identity["arch"], "final_loss": round(summary["final_loss"], 4)}
        return self._detector


def resolve_detector(spec: str, train: Sequence[DetectionSample], *, seed: int, epochs: int, progress: bool,
                     arch: str | None = None, image_size: tuple[int, int] | None = None,
                     device: str = "cpu", role: str = "") -> DetectorSource:
    """A checkpoint path is loaded (bare weights need ``arch`` and ``image_size``; the classes are the data
    set's); a registered architecture name is trained on ``train`` (seeded) when first needed.  Either way
    the detector ends up on ``device``.  ``role`` (e.g. ``"surrogate"``) names a detector other than the
    victim in the training's progress bars."""
    path = Path(spec).expanduser()
    if path.exists():
        from advbench.checkpoints import file_sha256

        names = train[0].class_names if arch is not None else None
        det = load_detector(path, arch=arch, class_names=names, image_size=image_size)
        if tuple(det.class_names) != tuple(train[0].class_names):
            raise InputError(f"detector {path} knows classes {list(det.class_names)} but the data set has "
                             f"{list(train[0].class_names)}; train it on this data set's classes")
        return DetectorSource({"checkpoint": str(path), "sha256": file_sha256(path), "arch": det.arch},
                              _detector=det.to(device))
    if spec in DETECTORS:
        # the role only names the bars; the victim's keep the plain ``train ARCH`` name
        named = {"role": role} if role and progress else {}

        def fit() -> tuple[Detector, dict[str, Any]]:
            return train_detector(train, DetectorTrainConfig(arch=spec, epochs=epochs, seed=seed), progress=progress,
                                  device=device, **named)

        return DetectorSource({"arch": spec, "trained_here": {"epochs": epochs, "seed": seed}}, _train=fit)
    raise InputError(f"detector '{spec}' is neither a checkpoint file nor an architecture "
                     f"({', '.join(DETECTORS.names())}); train one with `advbench train-detector`")


@dataclass
class PatchEvaluation:
    """Clean and patched detections on the test images, and the metrics computed from them."""

    clean: list[dict[str, torch.Tensor]]
    adversarial: list[dict[str, torch.Tensor]]
    patched_images: list[torch.Tensor]
    metrics: dict[str, Any]
    vehicles: list[dict[str, Any]]


def patch_images(images: Sequence[torch.Tensor], samples: Sequence[DetectionSample], patch: torch.Tensor,
                 attack: PatchAttack) -> list[torch.Tensor]:
    """The test images with ``patch`` on every vehicle roof (no jitter: the deployed placement)."""
    rboxes = [rotated_or_axis_boxes(s.boxes, s.rotated_boxes) for s in samples]
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(images), 16):  # batched placement, in chunks that bound the memory
            out += apply_patch_each(images[start:start + 16], patch, rboxes[start:start + 16], attack.placement,
                                    NO_JITTER)
    return out


def _detect_all(det: Detector, images: Sequence[torch.Tensor], batch: int = 8,
                bar: Any = None) -> list[dict[str, torch.Tensor]]:
    """Detections of every image, in batches, on the CPU (where the metrics are computed); ``bar`` (a progress
    bar, optional) advances by the images of each batch."""
    out: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(images), batch):
        chunk = list(images[start:start + batch])
        out += [{k: v.cpu() for k, v in d.items()} for d in det.detect(chunk)]
        if bar is not None:
            bar.update(len(chunk))
    return out


def load_images(samples: Sequence[DetectionSample], *, progress: bool = False,
                desc: str = "load images") -> list[torch.Tensor]:
    """Every sample's image, read from disk; ``progress`` shows a bar on stderr counting them."""
    with progress_bar(total=len(samples), desc=desc, unit="image", enabled=progress) as bar:
        images = []
        for s in samples:
            images.append(s.load_image())
            bar.update(1)
    return images


def evaluate_patch(det: Detector, samples: Sequence[DetectionSample], images: Sequence[torch.Tensor],
                   patch: torch.Tensor, attack: PatchAttack, *, score_threshold: float = 0.5, iou: float = 0.5,
                   clean: list[dict[str, torch.Tensor]] | None = None, progress: bool = False,
                   desc: str = "evaluate patch") -> PatchEvaluation:
    """Detect on clean and patched test images and compute ASR and AP (overall and per group).

    ``progress`` shows a bar on stderr counting the images detected on (clean ones unless ``clean`` is given,
    then patched ones)."""
    passes = 1 if clean is not None else 2
    with progress_bar(total=passes * len(images), desc=desc, unit="image", enabled=progress) as bar:
        if clean is None:
            bar.set_postfix(images="clean", refresh=False)
            clean = _detect_all(det, images, bar=bar)
        bar.set_postfix(images="patched", refresh=False)
        patched = patch_images(images, samples, patch, attack)
        adv = _detect_all(det, patched, bar=bar)
    success = attack_success(samples, clean, adv, iou=iou, score_threshold=score_threshold)
    summary = success.to_dict()
    metrics = {
        "asr": success.asr,
        "asr_by_altitude": {k: v["asr"] for k, v in summary["by_altitude"].items()},
        "asr_by_colour": {k: v["asr"] for k, v in summary["by_colour"].items()},
        "asr_by_type": {k: v["asr"] for k, v in summary["by_type"].items()},
        "counts": {k: summary[k] for k in ("overall", "by_altitude", "by_colour", "by_type")},
        "ap_clean": coco_map(samples, clean),
        "ap_adversarial": coco_map(samples, adv),
        "ap_clean_by_altitude": coco_map_by(samples, clean, "altitude"),
        "ap_adversarial_by_altitude": coco_map_by(samples, adv, "altitude"),
    }
    by_alt = [v for v in metrics["asr_by_altitude"].values() if v is not None]
    metrics["worst_altitude_asr"] = min(by_alt) if by_alt else None
    vehicles = []
    for s, found_clean, found_adv in zip(samples, success.detected_clean, success.detected_adv, strict=True):
        for j in range(len(s)):
            vehicles.append({"image_id": s.image_id, "box": j, "altitude": s.altitude,
                             "colour": s.colours[j] if s.colours else None, "type": s.types[j] if s.types else None,
                             "detected_clean": bool(found_clean[j]), "detected_adv": bool(found_adv[j])})
    return PatchEvaluation(clean=clean, adversarial=adv, patched_images=patched, metrics=metrics, vehicles=vehicles)


@dataclass
class DetectAttackResult:
    """What :func:`run_detect_attack` computed (kept in memory for the report and W&B)."""

    fit: PatchFit
    evaluation: PatchEvaluation
    control: PatchEvaluation
    test_samples: list[DetectionSample]
    test_images: list[torch.Tensor]


def run_detect_attack(spec: DetectAttackSpec, *, store: Any = None, force: bool = False,
                      progress: bool = True) -> RunOutcome:
    """Run one detect-attack experiment (see the module docstring); returns the stored record."""
    samples = load_detection_dataset(spec.dataset)
    if not samples:
        raise InputError(f"data set '{spec.dataset}' has no images; check the path and its filters")
    if spec.max_images is not None:
        gen = torch.Generator().manual_seed(spec.seed)
        pick = sorted(torch.randperm(len(samples), generator=gen)[: spec.max_images].tolist())
        samples = [samples[i] for i in pick]
    train, test = split_by_group(samples, spec.train_fraction, spec.seed)
    patch_train = train if spec.patch_altitudes is None else _altitude_subset(train, spec.patch_altitudes)
    victim = resolve_detector(spec.detector, train, seed=spec.seed, epochs=spec.detector_epochs,
                              progress=progress, arch=spec.detector_arch, image_size=spec.image_size,
                              device=spec.device)
    surrogate = None if not spec.surrogate else resolve_detector(
        spec.surrogate, train, seed=spec.seed + 1, epochs=spec.detector_epochs, progress=progress,
        device=spec.device, role="surrogate")
    extras = [resolve_detector(d, train, seed=spec.seed + 2 + i, epochs=spec.detector_epochs, progress=progress,
                               device=spec.device, role=f"detector {i + 2}")
              for i, d in enumerate(spec.extra_detectors)]
    ids: dict[str, Any] = {}
    if surrogate is not None:
        ids["surrogate"] = surrogate.identity
    if extras:
        ids["extra_detectors"] = [e.identity for e in extras]
    # --param seed=S reseeds the attack; detector placeholders check that the attack takes them at all
    kwargs: dict[str, Any] = {"seed": spec.seed, **spec.params}
    placeholders = {**({"surrogate": None} if surrogate else {}), **({"detectors": []} if extras else {})}
    attack = create_patch_attack(spec.attack, **kwargs, **placeholders)
    hyper = attack.hyperparameters()
    for key in ("surrogate", "detectors"):  # detector objects come later; their identities are in ``ids``
        hyper.pop(key, None)
    config = {
        "task": "detection",
        "dataset": spec.dataset,
        "detector": victim.identity,
        "attack": {"name": spec.attack, **hyper},
        **ids,
        "split": {"train_fraction": spec.train_fraction, "seed": spec.seed, "n_train": len(train),
                  "n_test": len(test)},
        "score_threshold": spec.score_threshold,
        "iou": spec.iou,
        "max_images": spec.max_images,
        **device_entry(spec.device),
    }
    if spec.patch_altitudes is not None:  # only when set, so the configs (and store keys) of other runs stay put
        config["patch_altitudes"] = sorted(spec.patch_altitudes)
        config["split"]["n_patch_train"] = len(patch_train)

    def compute() -> tuple[dict[str, Any], DetectAttackResult]:
        detector = victim.get()  # trains an architecture-named detector only now, after the store check
        fitter = attack if not placeholders else create_patch_attack(
            spec.attack, **kwargs, **({"surrogate": surrogate.get()} if surrogate else {}),
            **({"detectors": [e.get() for e in extras]} if extras else {}))
        trained = [s.training for s in (victim, surrogate, *extras) if s is not None and s.training]
        t0 = time.perf_counter()
        loaded = load_images([*patch_train, *test], progress=progress)
        train_images, images = loaded[:len(patch_train)], loaded[len(patch_train):]
        fit = fitter.fit(detector, PatchSet.from_samples(patch_train, train_images), progress=progress)
        t_fit = time.perf_counter() - t0
        thresholds = {"score_threshold": spec.score_threshold, "iou": spec.iou}
        evaluation = evaluate_patch(detector, test, images, fit.patch, fitter, **thresholds, progress=progress,
                                    desc="evaluate patch")
        noise = torch.rand(fit.patch.shape, generator=torch.Generator().manual_seed(spec.seed + 7919))
        control = evaluate_patch(detector, test, images, noise, fitter, clean=evaluation.clean, **thresholds,
                                 progress=progress, desc="evaluate control patch")
        metrics = dict(evaluation.metrics)
        metrics["control_asr"] = control.metrics["asr"]
        metrics["control_asr_by_altitude"] = control.metrics["asr_by_altitude"]
        metrics["patch"] = {"size": list(fit.patch.shape), "min": float(fit.patch.min()),
                            "max": float(fit.patch.max())}
        for key in ("weights", "domains", "weight_trace", "detection_rates", "accepted", "proposals"):
            if key in fit.info:
                metrics[key] = fit.info[key]
        cost = {"fit_seconds": round(t_fit, 3), "total_seconds": round(time.perf_counter() - t0, 3),
                "detector_queries": fit.info.get("detector_queries", 0), "steps": len(fit.history)}
        if trained:
            cost["detectors_trained_here"] = trained
        name = f"{victim.identity['arch']}|{spec.dataset}|{spec.attack}"
        record = make_record(config, name=name, metrics=metrics, cost=cost, samples=evaluation.vehicles,
                             device=spec.device)
        return record, DetectAttackResult(fit=fit, evaluation=evaluation, control=control, test_samples=test,
                                          test_images=images)

    return execute(config, compute, store=store, force=force)

