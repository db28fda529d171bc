"""Detection metrics for patch attacks on aerial vehicle detectors.

The metrics follow EVD4UAV (Sun, Guo et al., arXiv 2403.05422): the attack success rate (ASR) counts the
vehicles a detector finds on the clean image (IoU >= 0.5, score >= threshold) and loses after the attack, and the
AP50 / mAP drop is computed with pycocotools (Lin et al., ECCV 2014).  Everything can be broken down per altitude.

**Detections** use the torchvision detector output (Ren et al., NeurIPS 2015, as packaged by torchvision): one
mapping per image with

* ``boxes`` -- float ``(M, 4)`` ``x_min, y_min, x_max, y_max`` in pixels of the sample's image,
* ``scores`` -- float ``(M,)``,
* ``labels`` -- integer ``(M,)`` indices into the samples' ``class_names`` (0-based).  torchvision's COCO
  detectors count from 1 with 0 meaning background: map their labels before calling these functions.

Tensors may live on any device and may carry gradients; they are detached and copied to the CPU.  Lists and
NumPy arrays work too.  The ``i``-th detection mapping belongs to the ``i``-th sample.

COCO ids follow :func:`advbench.datasets.detection.export_coco`: the ``i``-th sample is image id ``i + 1``,
label ``k`` is category id ``k + 1`` and annotations are numbered from 1 in sample order.  So
:func:`coco_map` gives the same numbers as pycocotools run on the file ``export_coco`` writes plus the file
:func:`write_coco_detections` writes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advbench.datasets.detection.sample import DetectionSample
from advbench.errors import ConfigError, InputError
from advbench.io import atomic_write_text

#: The per-group keys :func:`coco_map_by` understands.
GROUP_KEYS = ("altitude", "snow")


# --------------------------------------------------------------------------------------------- input checking
@dataclass(frozen=True, eq=False)
class CheckedDetections:
    """One image's detections, validated: float32 boxes ``(M, 4)``, float32 scores ``(M,)``, int64 labels."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def _as_cpu_tensor(value: object, where: str, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{where}: {name} must be a tensor, array or list of numbers ({exc})") from exc


def _check_boxes(value: object, where: str, name: str) -> torch.Tensor:
    boxes = _as_cpu_tensor(value, where, name)
    if boxes.numel() == 0 and (boxes.dim() == 1 or boxes.shape[0] == 0):
        return torch.zeros((0, 4), dtype=torch.float32)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise InputError(f"{where}: {name} must have shape (M, 4) as x_min, y_min, x_max, y_max; "
                         f"got {tuple(boxes.shape)}")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise InputError(f"{where}: {name} must hold real numbers, got {boxes.dtype}")
    boxes = boxes.to(torch.float32)
    if not bool(torch.isfinite(boxes).all()):
        raise InputError(f"{where}: {name} holds NaN or infinite coordinates; drop those boxes first")
    if bool((boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any()):
        raise InputError(f"{where}: {name} has boxes with x_max < x_min or y_max < y_min; boxes must be "
                         "x_min, y_min, x_max, y_max (convert x, y, w, h boxes first)")
    return boxes


def _check_scores(value: object, count: int, where: str) -> torch.Tensor:
    scores = _as_cpu_tensor(value, where, "scores")
    if scores.numel() == 0 and count == 0:
        return torch.zeros(0, dtype=torch.float32)
    if scores.dim() != 1 or scores.shape[0] != count:
        raise InputError(f"{where}: scores must have shape ({count},), one per box; got {tuple(scores.shape)}")
    if scores.dtype == torch.bool or scores.is_complex():
        raise InputError(f"{where}: scores must hold real numbers, got {scores.dtype}")
    scores = scores.to(torch.float32)
    if not bool(torch.isfinite(scores).all()):
        raise InputError(f"{where}: scores holds NaN or infinite values; drop those detections first")
    return scores


def _check_labels(value: object, count: int, num_classes: int, where: str) -> torch.Tensor:
    labels = _as_cpu_tensor(value, where, "labels")
    if labels.numel() == 0 and count == 0:
        return torch.zeros(0, dtype=torch.int64)
    if labels.dim() != 1 or labels.shape[0] != count:
        raise InputError(f"{where}: labels must have shape ({count},), one per box; got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise InputError(f"{where}: labels must be integers (indices into class_names), got {labels.dtype}")
    labels = labels.to(torch.int64)
    if count and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise InputError(
            f"{where}: labels must lie in [0, {num_classes}) to index the samples' class_names; got "
            f"[{int(labels.min())}, {int(labels.max())}] (torchvision COCO detectors count from 1: map their labels)"
        )
    return labels


def _check_detections(det: object, where: str, num_classes: int) -> CheckedDetections:
    if not isinstance(det, Mapping):
        raise InputError(f"{where}: detections must be a mapping with 'boxes', 'scores' and 'labels', "
                         f"got {type(det).__name__}")
    missing = [k for k in ("boxes", "scores", "labels") if k not in det]
    if missing:
        raise InputError(f"{where}: detections lack {missing}; give 'boxes', 'scores' and 'labels' per image")
    boxes = _check_boxes(det["boxes"], where, "boxes")
    scores = _check_scores(det["scores"], int(boxes.shape[0]), where)
    labels = _check_labels(det["labels"], int(boxes.shape[0]), num_classes, where)
    return CheckedDetections(boxes, scores, labels)


def _check_samples(samples: Sequence[DetectionSample], caller: str) -> tuple[str, ...]:
    """Check ``samples`` is a non-empty list of samples that share ``class_names``; return those names."""
    if isinstance(samples, DetectionSample) or not isinstance(samples, Sequence):
        raise InputError(f"{caller}: samples must be a list of DetectionSample, got {type(samples).__name__}")
    if not samples:
        raise InputError(f"{caller}: samples is empty; pass at least one DetectionSample")
    for i, s in enumerate(samples):
        if not isinstance(s, DetectionSample):
            raise InputError(f"{caller}: samples[{i}] is a {type(s).__name__}, not a DetectionSample")
    names = samples[0].class_names
    for s in samples[1:]:
        if s.class_names != names:
            raise InputError(
                f"{caller}: sample '{s.image_id}' has class_names {s.class_names} but sample "
                f"'{samples[0].image_id}' has {names}; load all samples with the same classes"
            )
    return names


def check_all_detections(
    samples: Sequence[DetectionSample], detections: Sequence[Mapping[str, Any]], caller: str, name: str
) -> list[CheckedDetections]:
    names = _check_samples(samples, caller)
    if isinstance(detections, Mapping) or not isinstance(detections, Sequence):
        raise InputError(f"{caller}: {name} must be a list with one detection mapping per sample, "
                         f"got {type(detections).__name__}")
    if len(detections) != len(samples):
        raise InputError(f"{caller}: {name} has {len(detections)} entries for {len(samples)} samples; "
                         "give one detection mapping per sample, in the same order")
    return [
        _check_detections(d, f"{caller}: {name}[{i}] (image '{s.image_id}')", len(names))
        for i, (d, s) in enumerate(zip(detections, samples, strict=True))
    ]


def check_thresholds(iou: float, score_threshold: float) -> tuple[float, float]:
    if isinstance(iou, bool) or not isinstance(iou, numbers.Real) or not 0.0 < float(iou) <= 1.0:
        raise ConfigError(f"iou must be a number in (0, 1], got {iou!r}; the EVD4UAV protocol uses 0.5")
    if (isinstance(score_threshold, bool) or not isinstance(score_threshold, numbers.Real)
            or not math.isfinite(float(score_threshold))):
        raise ConfigError(f"score_threshold must be a finite number, got {score_threshold!r}; e.g. 0.5")
    return float(iou), float(score_threshold)


# ------------------------------------------------------------------------------------------------- matching
def match_detections(gt: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, iou: float,
                     threshold: float) -> torch.Tensor:
    """Greedy one-to-one matching in descending score order, as COCOeval does (Lin et al., ECCV 2014)."""
    from torchvision.ops import box_iou

    detected = np.zeros(int(gt.shape[0]), dtype=bool)
    keep = scores >= threshold
    if gt.shape[0] == 0 or not bool(keep.any()):
        return torch.from_numpy(detected)
    order = torch.sort(scores[keep], descending=True, stable=True).indices
    overlaps = box_iou(boxes[keep][order].double(), gt.double()).numpy()
    for row in overlaps:
        candidates = np.where(detected, -1.0, row)
        best = int(candidates.argmax())
        if candidates[best] >= iou:
            detected[best] = True
            if detected.all():
                break
    return torch.from_numpy(detected)


def match_detected(
    sample_boxes: torch.Tensor,
    det_boxes: torch.Tensor,
    det_scores: torch.Tensor,
    *,
    iou: float = 0.5,
    score_threshold: float = 0.5,
) -> torch.Tensor:
    """Which ground-truth boxes a detector found: a bool tensor ``(N,)``, one flag per row of ``sample_boxes``.

    A box counts as detected when a detection with ``score >= score_threshold`` overlaps it with
    ``IoU >= iou``.  Matching is one-to-one and greedy in descending score order, as in COCOeval (Lin et al.,
    ECCV 2014): each detection takes the still unmatched box it overlaps most, so one detection never explains
    two vehicles.  Matching is **class-agnostic** (labels are ignored): the EVD4UAV ASR (Sun, Guo et al.,
    arXiv 2403.05422) asks whether a vehicle is still found, not whether its class is right.

    Boxes are ``x_min, y_min, x_max, y_max`` in pixels; IoU is computed in float64 with
    :func:`torchvision.ops.box_iou`.
    """
    iou, score_threshold = check_thresholds(iou, score_threshold)
    where = "match_detected"
    gt = _check_boxes(sample_boxes, where, "sample_boxes")
    boxes = _check_boxes(det_boxes, where, "det_boxes")
    scores = _check_scores(det_scores, int(boxes.shape[0]), where)
    return match_detections(gt, boxes, scores, iou, score_threshold)


# ------------------------------------------------------------------------------------------ attack success
@dataclass(frozen=True)
class ASRCount:
    """Counts behind one attack success rate: ``asr = missed_after / detected_clean`` (``None`` when 0 found).

    ``vehicles`` is the number of ground-truth vehicles in the group, ``detected_clean`` how many the detector
    found on the clean images, ``missed_after`` how many of those it lost on the attacked images.
    """

    vehicles: int
    detected_clean: int
    missed_after: int

    @property
    def asr(self) -> float | None:
        """The attack success rate, or ``None`` when no vehicle of the group was detected on clean images."""
        return self.missed_after / self.detected_clean if self.detected_clean else None

    def to_dict(self) -> dict[str, int | float | None]:
        """``{"vehicles", "detected_clean", "missed_after", "asr"}`` as plain JSON values."""
        return {
            "vehicles": self.vehicles,
            "detected_clean": self.detected_clean,
            "missed_after": self.missed_after,
            "asr": self.asr,
        }


@dataclass(frozen=True, eq=False)
class AttackSuccess:
    """The result of :func:`attack_success`: per-vehicle flags and the ASR overall and per group.

    ``detected_clean[i]`` / ``detected_adv[i]`` are bool tensors ``(N_i,)`` for the ``i``-th sample, one flag per
    ground-truth box.  ``by_altitude``, ``by_colour``, ``by_type`` and ``by_class`` map a group name to its
    :class:`ASRCount`; vehicles whose sample has no such attribute (``altitude``, ``colours``, ``types`` is
    ``None``) are left out of that breakdown but still count in ``overall``.  Group names are sorted, numbers
    first by value (``"50m"`` before ``"100m"``).
    """

    iou: float
    score_threshold: float
    image_ids: tuple[str, ...]
    detected_clean: tuple[torch.Tensor, ...]
    detected_adv: tuple[torch.Tensor, ...]
    overall: ASRCount
    by_altitude: dict[str, ASRCount] = field(default_factory=dict)
    by_colour: dict[str, ASRCount] = field(default_factory=dict)
    by_type: dict[str, ASRCount] = field(default_factory=dict)
    by_class: dict[str, ASRCount] = field(default_factory=dict)

    @property
    def asr(self) -> float | None:
        """The overall attack success rate (``None`` when no vehicle was detected on the clean images)."""
        return self.overall.asr

    def broken(self) -> tuple[torch.Tensor, ...]:
        """Per sample, the vehicles detected on the clean image and missed after the attack."""
        return tuple(c & ~a for c, a in zip(self.detected_clean, self.detected_adv, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: thresholds, ``asr``, ``overall``, the four breakdowns and ``per_image`` flags."""
        return {
            "iou": self.iou,
            "score_threshold": self.score_threshold,
            "asr": self.asr,
            "overall": self.overall.to_dict(),
            "by_altitude": {k: v.to_dict() for k, v in self.by_altitude.items()},
            "by_colour": {k: v.to_dict() for k, v in self.by_colour.items()},
            "by_type": {k: v.to_dict() for k, v in self.by_type.items()},
            "by_class": {k: v.to_dict() for k, v in self.by_class.items()},
            "per_image": [
                {"image_id": i, "detected_clean": c.tolist(), "detected_adv": a.tolist()}
                for i, c, a in zip(self.image_ids, self.detected_clean, self.detected_adv, strict=True)
            ],
        }


def _natural_key(name: str) -> tuple[int, float, str]:
    number = re.match(r"\d+(?:\.\d+)?", name)
    return (0, float(number.group()), name) if number else (1, 0.0, name)


class _Tally:
    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def add(self, group: str, clean: bool, adv: bool) -> None:
        row = self.counts.setdefault(group, [0, 0, 0])
        row[0] += 1
        row[1] += int(clean)
        row[2] += int(clean and not adv)

    def result(self) -> dict[str, ASRCount]:
        return {k: ASRCount(*self.counts[k]) for k in sorted(self.counts, key=_natural_key)}


def attack_success(
    samples: Sequence[DetectionSample],
    clean_dets: Sequence[Mapping[str, Any]],
    adv_dets: Sequence[Mapping[str, Any]],
    *,
    iou: float = 0.5,
    score_threshold: float = 0.5,
) -> AttackSuccess:
    """The attack success rate of EVD4UAV (Sun, Guo et al., arXiv 2403.05422), overall and per group.

    ``ASR = #(vehicles detected on the clean image but missed after the attack) / #(vehicles detected on the
    clean image)``, where "detected" is :func:`match_detected` (class-agnostic, IoU >= ``iou``, score >=
    ``score_threshold``, greedy one-to-one).  A vehicle missed on the clean image never counts, whatever happens
    after the attack.  Breakdowns: per ``altitude`` of the image, per ``colour`` and ``type`` attribute of the
    vehicle, and per class name of its ground-truth label.  ``clean_dets`` and ``adv_dets`` hold one detection
    mapping per sample (see the module docstring).
    """
    iou, score_threshold = check_thresholds(iou, score_threshold)
    clean = check_all_detections(samples, clean_dets, "attack_success", "clean_dets")
    adv = check_all_detections(samples, adv_dets, "attack_success", "adv_dets")
    overall, altitude, colour, kind, klass = _Tally(), _Tally(), _Tally(), _Tally(), _Tally()
    flags_clean, flags_adv = [], []
    for sample, c, a in zip(samples, clean, adv, strict=True):
        gt = sample.boxes.detach().cpu()
        found_clean = match_detections(gt, c.boxes, c.scores, iou, score_threshold)
        found_adv = match_detections(gt, a.boxes, a.scores, iou, score_threshold)
        flags_clean.append(found_clean)
        flags_adv.append(found_adv)
        for j, (fc, fa, label) in enumerate(zip(found_clean.tolist(), found_adv.tolist(), sample.labels.tolist(),
                                                strict=True)):
            overall.add("all", fc, fa)
            klass.add(sample.class_names[label], fc, fa)
            if sample.altitude is not None:
                altitude.add(sample.altitude, fc, fa)
            if sample.colours is not None:
                colour.add(sample.colours[j], fc, fa)
            if sample.types is not None:
                kind.add(sample.types[j], fc, fa)
    return AttackSuccess(
        iou=iou,
        score_threshold=score_threshold,
        image_ids=tuple(s.image_id for s in samples),
        detected_clean=tuple(flags_clean),
        detected_adv=tuple(flags_adv),
        overall=overall.result().get("all", ASRCount(0, 0, 0)),
        by_altitude=altitude.result(),
        by_colour=colour.result(),
        by_type=kind.result(),
        by_class=klass.result(),
    )


# ---------------------------------------------------------------------------------------------- COCO mAP
def coco_ground_truth(samples: Sequence[DetectionSample]) -> dict[str, Any]:
    """The samples' boxes as a COCO ground-truth dict (Lin et al., ECCV 2014) for bbox evaluation.

    Ids are those of :func:`advbench.datasets.detection.export_coco`: image ``i + 1`` for ``samples[i]``,
    category ``k + 1`` for label ``k``, annotations numbered from 1 in sample order, ``bbox`` ``[x, y, w, h]``.
    ``area`` is the box area here (``export_coco`` writes the mask area when masks exist); it only affects the
    small/medium/large APs, which are not reported.
    """
    names = _check_samples(samples, "coco_ground_truth")
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index, sample in enumerate(samples):
        image_id = index + 1
        images.append({
            "id": image_id,
            "file_name": Path(sample.image_path).as_posix(),
            "width": sample.image_size[0],
            "height": sample.image_size[1],
            "image_key": sample.image_id,
        })
        for (x0, y0, x1, y1), label in zip(sample.boxes.tolist(), sample.labels.tolist(), strict=True):
            w, h = x1 - x0, y1 - y0
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": label + 1,
                "bbox": [x0, y0, w, h],
                "area": w * h,
                "iscrowd": 0,
            })
    return {
        "info": {"description": "built by advbench.detection.coco_ground_truth"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }


def _results(dets: Sequence[CheckedDetections]) -> list[dict[str, Any]]:
    out = []
    for index, det in enumerate(dets):
        for (x0, y0, x1, y1), score, label in zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist(),
                                                  strict=True):
            out.append({"image_id": index + 1, "category_id": label + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": score})
    return out


def coco_results(
    samples: Sequence[DetectionSample], detections: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Detections as a COCO results list (Lin et al., ECCV 2014): ``image_id``, ``category_id``, ``bbox``, ``score``.

    ``bbox`` is ``[x, y, w, h]``; ids follow :func:`coco_ground_truth` and ``export_coco``.
    """
    return _results(check_all_detections(samples, detections, "coco_results", "detections"))


def write_coco_detections(
    samples: Sequence[DetectionSample],
    detections: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
) -> Path:
    """Write the detections as a COCO results JSON file, atomically; return its path.

    pycocotools reads it with ``COCO(gt_file).loadRes(str(path))`` against the file that
    :func:`~advbench.datasets.detection.export_coco` writes for the same samples in the same order.  With no
    detections at all the file holds ``[]``, which ``loadRes`` cannot read (:func:`coco_map` handles that case).
    """
    out = Path(path).expanduser()
    atomic_write_text(out, json.dumps(coco_results(samples, detections)))
    return out


def _check_max_dets(max_dets: int) -> int:
    if isinstance(max_dets, bool) or not isinstance(max_dets, numbers.Integral) or max_dets < 1:
        raise ConfigError(f"max_dets must be a positive integer, got {max_dets!r}; COCO uses 100 detections "
                          "per image, raise it for crowded aerial images")
    return int(max_dets)


def _ap(value: float) -> float | None:
    return None if value < 0 else float(value)


def _evaluate(ground_truth: dict[str, Any], results: list[dict[str, Any]], max_dets: int) -> dict[str, float | None]:
    if not results:  # pycocotools' loadRes cannot read an empty list
        value = 0.0 if ground_truth["annotations"] else None
        return {"AP50": value, "mAP": value}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"AP50": _ap(evaluator.stats[1]), "mAP": _ap(evaluator.stats[0])}


def coco_map(
    samples: Sequence[DetectionSample],
    detections: Sequence[Mapping[str, Any]],
    *,
    max_dets: int = 100,
) -> dict[str, float | None]:
    """COCO box AP with pycocotools COCOeval (Lin et al., ECCV 2014): ``{"AP50": ..., "mAP": ...}``.

    ``AP50`` is AP at IoU 0.5 and ``mAP`` is AP averaged over IoU 0.50:0.05:0.95, both over all box sizes with
    at most ``max_dets`` detections per image (COCO's default 100), averaged over the categories that have
    ground truth.  Pass all the detector's boxes (no score threshold): AP integrates over scores.

    Edge cases: no detections at all gives 0.0 (pycocotools cannot load an empty result list); no ground-truth
    box in any image gives ``None`` (AP is undefined; pycocotools reports -1).  Images without ground truth
    are kept, so detections on them count as false positives.
    """
    max_dets = _check_max_dets(max_dets)
    dets = check_all_detections(samples, detections, "coco_map", "detections")
    return _evaluate(coco_ground_truth(samples), _results(dets), max_dets)


def _group_of(sample: DetectionSample, key: str) -> str | None:
    if key == "altitude":
        return sample.altitude
    return None if sample.snow is None else ("snow" if sample.snow else "no_snow")


def coco_map_by(
    samples: Sequence[DetectionSample],
    detections: Sequence[Mapping[str, Any]],
    key: str = "altitude",
    *,
    max_dets: int = 100,
) -> dict[str, dict[str, float | None]]:
    """:func:`coco_map` per group of images: ``{group: {"AP50": ..., "mAP": ...}}``.

    ``key`` is ``"altitude"`` (groups like ``"50m"``, the EVD4UAV breakdown of Sun, Guo et al.,
    arXiv 2403.05422) or ``"snow"`` (groups ``"snow"`` / ``"no_snow"``).  Each group is evaluated on its own
    subset of images; images whose attribute is ``None`` belong to no group.  Groups are sorted, numbers first
    by value.
    """
    if key not in GROUP_KEYS:
        raise ConfigError(f"coco_map_by: unknown key {key!r}; choose one of {', '.join(GROUP_KEYS)}")
    max_dets = _check_max_dets(max_dets)
    dets = check_all_detections(samples, detections, "coco_map_by", "detections")
    groups: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        group = _group_of(sample, key)
        if group is not None:
            groups.setdefault(group, []).append(index)
    out = {}
    for group in sorted(groups, key=_natural_key):
        members = groups[group]
        subset = [samples[i] for i in members]
        out[group] = _evaluate(coco_ground_truth(subset), _results([dets[i] for i in members]), max_dets)
    return out
