"""The detection experiment: a universal roof patch learned on a training split, measured on held-out images.

The protocol is EVD4UAV's (Sun, Guo et al., arXiv 2403.05422); ``advbench detect-attack`` runs
it through this experiment:

1. the images are split per altitude (seeded) into a patch-training part and a held-out test part;
2. one patch is learned with the patch attack against the victim detector (or a surrogate, for
   ``patch-transfer``; several detectors as domains for ``patch-minmax``) on the training images;
3. every test image is detected clean, with the patch on every vehicle roof, and with a random-noise *control*
   patch of the same size (occlusion alone is not read as an attack);
4. ASR (vehicles found clean but missed after, over vehicles found clean), AP50 and mAP (pycocotools) before
   and after, overall and per altitude, colour and type.

In the pipeline the patch is *global*: it is learned over the training images, once per process, the first
time a batch needs it (so a run answered from the store never trains a detector or fits a patch).  The
attack's generator is seeded from the config (its ``seed`` hyperparameter, the run's seed unless
``attack_params`` overrides it), so every process that fits it (each Dask worker, each shard) fits the same
patch; the run's identity holds the patch's inputs, never the patch.  The batches are the *test* images:
each batch returns its per-vehicle rows and its ground truth and detections as JSON lists, and
:meth:`DetectionExperiment.merge` computes ASR and the COCO APs over all of them together (:func:`patch_metrics`),
so the numbers are those of the whole test set however it was cut into batches or shards.

:class:`~advbench.pipeline.config.RunConfig` carries the run as follows: ``models`` = the victim detector
(a checkpoint, or a registered architecture trained here on the training split) and, for ``patch-minmax``,
more detectors as domains; ``attacks`` = one patch attack, its hyperparameters in ``attack_params``;
``n_samples`` = a seeded subset of the images (``None``: every image); ``seed``; ``batch_size`` = test images
per batch; ``device``.  ``eps`` and ``norm`` do not apply (a patch is bounded by its area and [0, 1]).  The rest
comes from ``options`` (see :data:`OPTION_DEFAULTS`).
"""

from __future__ import annotations

import hashlib
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from advbench.errors import ConfigError, InputError
from advbench.pipeline.config import ResolvedConfig, RunConfig
from advbench.pipeline.experiment import EXPERIMENTS, BatchResult, Experiment, Plan

#: The ``RunConfig.options`` this experiment reads, with their defaults (those of ``advbench detect-attack``).
OPTION_DEFAULTS: dict[str, Any] = {
    "surrogate": None,  # patch-transfer: the surrogate detector (checkpoint or architecture), never the victim
    "train_fraction": 0.5,  # share of each altitude's images the patch is learned on
    "score_threshold": 0.5,  # a detection counts as finding a vehicle from this score
    "iou": 0.5,  # ... and from this overlap with it
    "detector_epochs": 60,  # epochs when a detector is named by its architecture (trained here)
    "detector_arch": None,  # bare .pt/.pth weights: their architecture
    "image_size": None,  # bare weights: the (width, height) they were trained at, or "WxH"
    "patch_altitudes": None,  # learn the patch on these altitudes' training images only (all are measured)
    "attack_seed": None,  # seed of the generator the patch attack draws from (None: the run's seed)
    "progress": True,  # progress bars for detector training and the patch fit (not part of the identity)
}

#: Where the random-noise control patch's generator is seeded, relative to the run's seed (as detect-attack).
CONTROL_SEED_OFFSET = 7919
#: Images per detector call.
DETECT_CHUNK = 8
#: Test images (of the first batch a process computes) kept for W&B and the report grid.
EXAMPLES = 8
#: What a patch fit reports that goes into the metrics.
FIT_INFO_KEYS = ("weights", "domains", "weight_trace", "detection_rates", "accepted", "proposals")


# -------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class DetectionOptions:
    """The validated ``RunConfig.options`` of a detection run (see :data:`OPTION_DEFAULTS`)."""

    surrogate: str | None = None
    train_fraction: float = 0.5
    score_threshold: float = 0.5
    iou: float = 0.5
    detector_epochs: int = 60
    detector_arch: str | None = None
    image_size: tuple[int, int] | None = None
    patch_altitudes: tuple[str, ...] | None = None
    attack_seed: int | None = None
    progress: bool = True


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ConfigError(f"option {name} must be a number, got {value!r}")
    return float(value)


def _text(name: str, value: Any, hint: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"option {name} must be a non-empty string ({hint}), got {value!r}")
    return value.strip()


def _image_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    parts: list[Any]
    if isinstance(value, str):
        w, sep, h = value.lower().partition("x")
        parts = [w.strip(), h.strip()] if sep else []
        parts = [int(p) if p.isdigit() else p for p in parts]
    else:
        parts = list(value) if isinstance(value, (list, tuple)) else []
    if len(parts) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in parts):
        raise ConfigError(f"option image_size must be the (width, height) bare weights were trained at, as "
                          f"[256, 192] or '256x192', got {value!r}")
    return int(parts[0]), int(parts[1])


def _altitudes(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [p.strip() for p in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(a, str) and a.strip()
                                                                    for a in items):
        raise ConfigError(f"option patch_altitudes must be a non-empty list of altitude names such as ['90m'] "
                          f"(or '50m,90m'), got {value!r}")
    return tuple(sorted({a.strip() for a in items}))


def parse_options(options: Mapping[str, Any]) -> DetectionOptions:
    """Validate the detection experiment's ``options``; every error names the option and says how to fix it."""
    unknown = sorted(set(options) - set(OPTION_DEFAULTS))
    if unknown:
        raise ConfigError(f"the detection experiment has no option {', '.join(map(repr, unknown))}; its options "
                          f"are {', '.join(OPTION_DEFAULTS)} (patch attack hyperparameters go in attack_params)")
    raw = {**OPTION_DEFAULTS, **options}
    train_fraction = _real("train_fraction", raw["train_fraction"])
    if not 0 < train_fraction < 1:
        raise ConfigError(f"option train_fraction must lie in (0, 1) (the share of each altitude to learn the "
                          f"patch on), got {train_fraction}")
    score_threshold = _real("score_threshold", raw["score_threshold"])
    if not 0 <= score_threshold <= 1:
        raise ConfigError(f"option score_threshold must lie in [0, 1], got {score_threshold}")
    iou = _real("iou", raw["iou"])
    if not 0 < iou <= 1:
        raise ConfigError(f"option iou must lie in (0, 1] (EVD4UAV uses 0.5), got {iou}")
    epochs = raw["detector_epochs"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"option detector_epochs must be a positive integer, got {epochs!r}")
    attack_seed = raw["attack_seed"]
    if attack_seed is not None and (isinstance(attack_seed, bool) or not isinstance(attack_seed, int)):
        raise ConfigError(f"option attack_seed must be an integer (the patch attack's generator seed), got "
                          f"{attack_seed!r}")
    if not isinstance(raw["progress"], bool):
        raise ConfigError(f"option progress must be true or false, got {raw['progress']!r}")
    return DetectionOptions(
        surrogate=_text("surrogate", raw["surrogate"], "a checkpoint path or a detector architecture"),
        train_fraction=train_fraction, score_threshold=score_threshold, iou=iou, detector_epochs=epochs,
        detector_arch=_text("detector_arch", raw["detector_arch"], "e.g. fcos-mnv3"),
        image_size=_image_size(raw["image_size"]), patch_altitudes=_altitudes(raw["patch_altitudes"]),
        attack_seed=attack_seed, progress=raw["progress"])


def _refuse_classifier_fields(cfg: RunConfig) -> None:
    """RunConfig fields that mean nothing for a patch on a detector are refused when set, not ignored."""
    if len(cfg.attacks) != 1:
        raise ConfigError(f"the detection experiment learns one patch per run, got attacks {cfg.attacks}; run "
                          "the patch attacks one by one (a sweep runs several)")
    if cfg.defense:
        raise ConfigError("the detection experiment has no input defenses; drop defense")
    for name in ("samples", "class_map"):
        if getattr(cfg, name) is not None:
            raise ConfigError(f"{name} selects classification samples; the detection experiment takes a seeded "
                              "subset of the images with n_samples")
    if any(v is not None for v in cfg.model_flags.model_dump().values()):
        raise ConfigError("model_flags describe classifiers; for bare detector weights set the options "
                          "detector_arch and image_size")


# ------------------------------------------------------------------------------------------------- helpers
def data_fingerprint(samples: Sequence[Any]) -> str:
    """SHA-256 over the selected images' files and annotations, in order (the data's content identity)."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(s.image_id.encode() + b"\0")
        digest.update(hashlib.sha256(Path(s.image_path).read_bytes()).digest())
        digest.update(s.boxes.numpy().astype("<f4").tobytes() + s.labels.numpy().astype("<i8").tobytes())
        digest.update(repr((s.altitude, s.colours, s.types, list(s.class_names))).encode())
    return digest.hexdigest()


def detect_images(detector: Any, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Detections of every image, :data:`DETECT_CHUNK` images per call, on the CPU (where metrics are computed)."""
    out: list[dict[str, torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(images), DETECT_CHUNK):
            found = detector.detect(list(images[start:start + DETECT_CHUNK]))
            out += [{k: v.cpu() for k, v in d.items()} for d in found]
    return out


def detections_json(det: Mapping[str, torch.Tensor], keep: torch.Tensor | None = None) -> dict[str, list]:
    boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
    if keep is not None:
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    return {"boxes": boxes.tolist(), "scores": scores.tolist(), "labels": labels.tolist()}


def _dets_tensors(det: Mapping[str, list]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(det["boxes"], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(det["scores"], dtype=torch.float32),
            "labels": torch.tensor(det["labels"], dtype=torch.int64)}


def image_json(sample: Any) -> dict[str, Any]:
    """A test image's ground truth, as merge needs it to rebuild the sample."""
    return {"image_id": sample.image_id, "image_path": str(sample.image_path), "image_size": list(sample.image_size),
            "altitude": sample.altitude, "boxes": sample.boxes.tolist(), "labels": sample.labels.tolist(),
            "colours": sample.colours, "types": sample.types}


def _image_sample(item: Mapping[str, Any], class_names: Sequence[str]) -> Any:
    from advbench.datasets.detection import DetectionSample

    return DetectionSample(image_id=item["image_id"], image_path=Path(item["image_path"]),
                           image_size=(int(item["image_size"][0]), int(item["image_size"][1])),
                           boxes=torch.tensor(item["boxes"], dtype=torch.float32).reshape(-1, 4),
                           labels=torch.tensor(item["labels"], dtype=torch.int64), class_names=tuple(class_names),
                           colours=item["colours"], types=item["types"], altitude=item["altitude"])


def patch_metrics(samples: Sequence[Any], clean: Sequence[Mapping[str, Any]], adversarial: Sequence[Mapping[str, Any]],
                  *, score_threshold: float, iou: float) -> dict[str, Any]:
    """ASR (EVD4UAV, Sun, Guo et al., arXiv 2403.05422) and COCO AP50/mAP (Lin et al., ECCV 2014) of a patch
    over ``samples``, overall and per group, from every image's clean and patched detections."""
    from advbench.detection.metrics import attack_success, coco_map, coco_map_by

    summary = attack_success(samples, clean, adversarial, iou=iou, score_threshold=score_threshold).to_dict()
    metrics = {
        "asr": summary["asr"],
        "asr_by_altitude": {k: v["asr"] for k, v in summary["by_altitude"].items()},
        "asr_by_colour": {k: v["asr"] for k, v in summary["by_colour"].items()},
        "asr_by_type": {k: v["asr"] for k, v in summary["by_type"].items()},
        "counts": {k: summary[k] for k in ("overall", "by_altitude", "by_colour", "by_type")},
        "ap_clean": coco_map(samples, clean),
        "ap_adversarial": coco_map(samples, adversarial),
        "ap_clean_by_altitude": coco_map_by(samples, clean, "altitude"),
        "ap_adversarial_by_altitude": coco_map_by(samples, adversarial, "altitude"),
    }
    by_alt = [v for v in metrics["asr_by_altitude"].values() if v is not None]
    metrics["worst_altitude_asr"] = min(by_alt) if by_alt else None
    return metrics


class _TestImages(Dataset):
    """The test images, read from disk one batch at a time (item ``i`` is test image ``i``)."""

    def __init__(self, samples: Sequence[Any]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.samples[index].load_image()


@dataclass
class FittedPatch:
    """The patch learned in this process, the control patch, the attack that placed it and what the fit cost."""

    patch: torch.Tensor
    control: torch.Tensor
    attack: Any
    info: dict[str, Any]
    steps: int
    fit_seconds: float
    trained: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- experiment
@EXPERIMENTS.register("detection")
class DetectionExperiment(Experiment):
    """A roof patch against a vehicle detector, EVD4UAV protocol (see the module docstring)."""

    name = "detection"

    def resolve(self) -> Plan:
        from advbench import create_attack
        from advbench.attack import check_attack_task
        from advbench.datasets.detection import load_detection_dataset
        from advbench.detection.protocol import altitude_subset, resolve_detector, split_by_group

        cfg = self.run_config
        _refuse_classifier_fields(cfg)
        opts = self.options = parse_options(cfg.options)
        attack_name = cfg.attacks[0]
        check_attack_task([attack_name], "detection", "detection experiment")  # unknown names list the attacks
        if attack_name == "patch-transfer" and not opts.surrogate:
            raise ConfigError("patch-transfer needs the option surrogate (a checkpoint or architecture other "
                              "than the victim)")
        samples = load_detection_dataset(cfg.dataset)
        if not samples:
            raise InputError(f"data set '{cfg.dataset}' has no images; check the path and its filters")
        if cfg.n_samples is not None:  # a seeded subset of the images, drawn before the split
            pick = torch.randperm(len(samples), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.n_samples]
            samples = [samples[i] for i in sorted(pick.tolist())]
        train, self.test = split_by_group(samples, opts.train_fraction, cfg.seed)
        self.patch_train = train if opts.patch_altitudes is None else altitude_subset(train, opts.patch_altitudes)
        progress = opts.progress
        self.victim = resolve_detector(cfg.model, train, seed=cfg.seed, epochs=opts.detector_epochs,
                                       progress=progress, arch=opts.detector_arch, image_size=opts.image_size,
                                       device=cfg.device)
        self.surrogate = None if not opts.surrogate else resolve_detector(
            opts.surrogate, train, seed=cfg.seed + 1, epochs=opts.detector_epochs, progress=progress,
            device=cfg.device, role="surrogate")
        self.extras = [resolve_detector(d, train, seed=cfg.seed + 2 + i, epochs=opts.detector_epochs,
                                        progress=progress, device=cfg.device, role=f"detector {i + 2}")
                       for i, d in enumerate(cfg.models[1:])]
        # the attack draws from a generator seeded by the run's seed, or by the option attack_seed; detector
        # placeholders check that the attack takes a surrogate / more detectors at all (the detectors themselves
        # come when the patch is fitted)
        self.attack_kwargs: dict[str, Any] = dict(cfg.params_for(attack_name))
        if "seed" in self.attack_kwargs:
            raise ConfigError(f"{attack_name} has no seed of its own: it draws from the run's generator; set the "
                              "option attack_seed (detect-attack --attack-seed) instead of the attack parameter seed")
        self.attack_seed = cfg.seed if opts.attack_seed is None else opts.attack_seed
        placeholders = {**({"surrogate": None} if self.surrogate else {}), **({"detectors": []} if self.extras else {})}
        hyper = create_attack(attack_name, **self.attack_kwargs, **placeholders).hyperparameters()
        hyper["seed"] = self.attack_seed  # the generator's seed: one patch per seed, as every record has said
        for key in ("name", "surrogate", "detectors"):  # the name is the row's; the detectors' identities are below
            hyper.pop(key, None)
        extra: dict[str, Any] = {}
        if self.surrogate is not None:
            extra["surrogate"] = self.surrogate.identity
        if self.extras:
            extra["extra_detectors"] = [e.identity for e in self.extras]
        if opts.patch_altitudes is not None:
            extra["patch_altitudes"] = list(opts.patch_altitudes)
        data = {"classes": list(train[0].class_names), "n_images": len(samples), "max_images": cfg.n_samples,
                "train_fraction": opts.train_fraction, "n_train": len(train), "n_test": len(self.test),
                "n_patch_train": len(self.patch_train), "fingerprint": data_fingerprint(samples)}
        identity = self.victim.identity
        config = ResolvedConfig(
            experiment=self.name, model={"name": identity["arch"], **identity}, arch=identity["arch"],
            dataset=cfg.dataset, data=data, split="test", split_seed=cfg.seed, n_samples=len(self.test),
            norm="patch", eps=[], attacks=[{"name": attack_name, **hyper}], seed=cfg.seed,
            batch_size=cfg.batch_size, device=torch.device(cfg.device).type, task="detection",
            score_threshold=opts.score_threshold, iou=opts.iou, **extra)
        self._fitted: FittedPatch | None = None
        self.examples: dict[str, Any] = {}
        return Plan(config, len(self.test), cfg.batch_size, [])

    # -- the global part: the patch, learned once per process --------------------------------------------
    @property
    def fitted(self) -> FittedPatch:
        """The patch learned on the training split (fitted on first use; deterministic given the config)."""
        if self._fitted is None:
            self._fitted = self._fit()
        return self._fitted

    def _fit(self) -> FittedPatch:
        from advbench import create_attack
        from advbench.attacks.patch import PatchSet
        from advbench.detection.protocol import load_images

        cfg, progress = self.run_config, self.options.progress
        detector = self.victim.get()  # trains an architecture-named detector only now
        attack = create_attack(cfg.attacks[0], **self.attack_kwargs,
                                     **({"surrogate": self.surrogate.get()} if self.surrogate else {}),
                                     **({"detectors": [e.get() for e in self.extras]} if self.extras else {}))
        trained = [s.training for s in (self.victim, self.surrogate, *self.extras) if s is not None and s.training]
        t0 = time.perf_counter()
        images = load_images(self.patch_train, progress=progress)
        fit = attack(detector, PatchSet.from_samples(self.patch_train, images),
                     generator=torch.Generator().manual_seed(self.attack_seed), progress=progress)
        noise = torch.rand(fit.patch.shape, generator=torch.Generator().manual_seed(cfg.seed + CONTROL_SEED_OFFSET))
        info = {k: fit.info[k] for k in FIT_INFO_KEYS if k in fit.info}
        info["detector_queries"] = fit.info.get("detector_queries", 0)
        return FittedPatch(patch=fit.patch, control=noise, attack=attack, info=info, steps=len(fit.history),
                           fit_seconds=time.perf_counter() - t0, trained=trained)

    # -- batches of test images ----------------------------------------------------------------------------
    def dataset(self) -> Dataset:
        return _TestImages(self.test)

    def collate(self, items: Any) -> Any:
        return list(items)  # images of different sizes stay a list

    def compute(self, batch: int, indices: np.ndarray, inputs: Any, generator: torch.Generator) -> BatchResult:
        """Detect on the batch's clean, patched and control-patched images (placement has no randomness)."""
        from advbench.detection.metrics import attack_success
        from advbench.detection.protocol import patch_images

        fitted = self.fitted
        t0 = time.perf_counter()
        samples = [self.test[int(i)] for i in indices]
        images = list(inputs)
        detector = self.victim.get()
        clean = detect_images(detector, images)
        patched = patch_images(images, samples, fitted.patch, fitted.attack)
        adversarial = detect_images(detector, patched)
        control = detect_images(detector, patch_images(images, samples, fitted.control, fitted.attack))
        opts = self.options
        success = attack_success(samples, clean, adversarial, iou=opts.iou, score_threshold=opts.score_threshold)
        rows, pieces = [], []
        for k, s in enumerate(samples):
            for j in range(len(s)):
                rows.append({"sample_index": int(indices[k]), "image_id": s.image_id, "box": j,
                             "altitude": s.altitude, "colour": s.colours[j] if s.colours else None,
                             "type": s.types[j] if s.types else None,
                             "detected_clean": bool(success.detected_clean[k][j]),
                             "detected_adv": bool(success.detected_adv[k][j])})
            # the control patch only enters the ASR, which ignores detections under the score threshold
            keep = control[k]["scores"] >= opts.score_threshold
            pieces.append({**image_json(s), "clean": detections_json(clean[k]),
                           "adversarial": detections_json(adversarial[k]),
                           "control": detections_json(control[k], keep)})
        if not self.examples:
            n = min(EXAMPLES, len(samples))
            self.examples = {"samples": samples[:n], "clean": images[:n], "patched": patched[:n],
                             "dets_clean": clean[:n], "dets_adversarial": adversarial[:n]}
        result: BatchResult = {"samples": rows, "images": pieces, "wall_time_s": time.perf_counter() - t0}
        if batch == 0:  # what the fit reports, once per run (every process fits the same patch)
            result["fit"] = {**fitted.info, "steps": fitted.steps, "fit_seconds": fitted.fit_seconds,
                             "trained": fitted.trained,
                             "patch": {"size": list(fitted.patch.shape), "min": float(fitted.patch.min()),
                                       "max": float(fitted.patch.max())}}
        return result

    def merge(self, config: dict[str, Any], warnings: Sequence[str], results: Sequence[BatchResult]
              ) -> dict[str, Any]:
        from advbench.detection.metrics import attack_success

        classes = config["data"]["classes"]
        pieces = [item for r in results for item in r["images"]]
        samples = [_image_sample(item, classes) for item in pieces]
        clean = [_dets_tensors(item["clean"]) for item in pieces]
        adversarial = [_dets_tensors(item["adversarial"]) for item in pieces]
        control = [_dets_tensors(item["control"]) for item in pieces]
        thresholds = {"score_threshold": config["score_threshold"], "iou": config["iou"]}
        metrics = patch_metrics(samples, clean, adversarial, **thresholds)
        control_summary = attack_success(samples, clean, control, **thresholds).to_dict()
        metrics["control_asr"] = control_summary["asr"]
        metrics["control_asr_by_altitude"] = {k: v["asr"] for k, v in control_summary["by_altitude"].items()}
        fit = dict(results[0]["fit"])
        metrics["patch"] = fit.pop("patch")
        metrics.update({k: fit[k] for k in FIT_INFO_KEYS if k in fit})
        if warnings:
            metrics["warnings"] = list(warnings)
        cost: dict[str, Any] = {
            "fit_seconds": round(fit["fit_seconds"], 3),
            "total_seconds": round(fit["fit_seconds"] + sum(r["wall_time_s"] for r in results), 3),
            "detector_queries": fit["detector_queries"], "steps": fit["steps"]}
        if fit["trained"]:
            cost["detectors_trained_here"] = fit["trained"]
        return {"metrics": metrics, "cost": cost, "samples": [row for r in results for row in r["samples"]]}

    # -- output ----------------------------------------------------------------------------------------------
    def render(self, record: Any) -> Any:
        return detection_table(record)

    def after_store(self, record: Any, wandb: dict[str, Any] | None) -> None:
        if wandb is None:
            return
        from advbench.tracking import WandbSink

        data = record.as_dict(samples=False) if hasattr(record, "as_dict") else dict(record)
        images = None
        clean, patched = self.examples.get("clean", []), self.examples.get("patched", [])
        if clean and len({tuple(t.shape) for t in clean}) == 1:
            images = {"clean": torch.stack(clean), "adversarial": torch.stack(patched)}
        tags = ["detection", *(a["name"] for a in data["config"]["attacks"])]
        with WandbSink(name=data["name"], config=data["config"], tags=tags, **wandb) as sink:
            sink.log_record(data, images=images)
            if "weight_trace" in data["metrics"]:
                sink.log_weight_trace(data["metrics"]["weight_trace"], list(data["metrics"]["weights"]))

    def write_report(self, directory: Path, record: Any) -> Path:
        """``report.json``, ``patch.png`` and ``grid.png`` (clean vs patched detections of up to
        :data:`EXAMPLES` test images of the first batch this process computed) under ``directory``."""
        import json

        from PIL import Image

        from advbench.detection.report import save_detection_grid, write_png
        from advbench.io import atomic_write_text

        if self._fitted is None or not self.examples:
            raise ConfigError("the report needs the patch and images of a run computed in this process; the run "
                              "came from the store: rerun it with force to write a report")
        data = record.as_dict() if hasattr(record, "as_dict") else dict(record)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / "report.json", json.dumps(data, indent=2, default=str) + "\n")
        patch = (self._fitted.patch.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        side = 8 * max(patch.shape[:2])
        write_png(Image.fromarray(patch).resize((side, side), Image.NEAREST), directory / "patch.png")
        ex = self.examples
        save_detection_grid(ex["samples"], ex["clean"], ex["dets_clean"], ex["patched"], ex["dets_adversarial"],
                            directory / "grid.png", score_threshold=data["config"]["score_threshold"])
        return directory


def detection_table(record: Any) -> Any:
    """ASR and AP50 per altitude (and overall) with the random-patch control, as ``advbench detect-attack``
    printed it; reads the record only."""
    from rich.table import Table

    from advbench.pipeline.tables import fmt

    data = record.as_dict(samples=False) if hasattr(record, "as_dict") else record
    m, config = data["metrics"], data["config"]
    table = Table(title=f"{config['attacks'][0]['name']} on {config['model'].get('arch', config['model'].get('name'))}")
    for col in ("altitude", "vehicles found clean", "ASR", "control ASR", "AP50 clean", "AP50 patched", "weight"):
        table.add_column(col, justify="right")
    weights = m.get("weights") or {}
    counts = m["counts"]["by_altitude"]
    for alt in counts:
        table.add_row(alt, str(counts[alt]["detected_clean"]), fmt(m["asr_by_altitude"].get(alt)),
                      fmt(m["control_asr_by_altitude"].get(alt)),
                      fmt(m["ap_clean_by_altitude"].get(alt, {}).get("AP50")),
                      fmt(m["ap_adversarial_by_altitude"].get(alt, {}).get("AP50")), fmt(weights.get(alt)))
    table.add_row("all", str(m["counts"]["overall"]["detected_clean"]), fmt(m["asr"]), fmt(m["control_asr"]),
                  fmt(m["ap_clean"]["AP50"]), fmt(m["ap_adversarial"]["AP50"]), "")
    return table
