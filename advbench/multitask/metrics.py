"""Metrics of the multi-task victims' dense-prediction tasks, their change under attack and stealth success (the
heads themselves, with their losses and target formats, are :mod:`advbench.models.task_heads`).

The tasks are those of the NYUv2 multi-task benchmark (Silberman, Hoiem, Kohli and Fergus, "Indoor Segmentation
and Support Inference from RGBD Images", ECCV 2012) as used by the stealthy multi-task attack of Guo, Zhang, Li
et al. (arXiv 2411.17936): semantic segmentation, depth and surface normals.  Each task is
one :class:`TaskHead` in the :data:`TASK_HEADS` registry, which fixes its output channels and activation, its
per-sample loss, its target format and its headline metric with the direction that counts as worse.

Targets (``N`` images of ``H x W``):

* ``seg`` -- int64 class ids ``(N,H,W)``; :data:`IGNORE_INDEX` (255) marks unlabelled pixels.  Outputs are logits
  ``(B,C,H,W)``.  Loss: cross-entropy over the labelled pixels.  Metric: mIoU (higher is better).
* ``depth`` -- float metres ``(N,1,H,W)``; 0 marks an invalid pixel.  Outputs are positive depths ``(B,1,H,W)``.
  Loss: L1 over the valid pixels.  Metric: absolute error ``mean |pred - gt|`` in metres (lower is better); the
  relative error ``mean |pred - gt| / gt`` is reported too.
* ``normal`` -- float unit vectors ``(N,3,H,W)``; the zero vector marks an invalid pixel.  Outputs are unit vectors
  ``(B,3,H,W)``.  Loss: ``1 - cos(pred, gt)`` over the valid pixels.  Metric: mean angular error in degrees (lower
  is better); the shares of valid pixels within 11.25, 22.5 and 30 degrees are reported too (Eigen and Fergus,
  "Predicting Depth, Surface Normals and Semantic Labels with a Common Multi-Scale Convolutional Architecture",
  ICCV 2015).

Every loss comes back **per sample**, shape ``(B,)`` (the mean over that image's valid pixels, 0 for an image with
none), so an attack can weight and mask samples.  Metric conventions:

* **mIoU of one image**: for every class ``c`` the intersection ``|pred = c and gt = c|`` and the union
  ``|pred = c or gt = c|`` over the labelled pixels (pixels whose gt is 255 count for nothing, whatever is
  predicted there); the IoU is averaged over the classes **present in the gt or in the prediction** (union > 0).
  An image with no labelled pixel has mIoU NaN.
* **mIoU over a set**: intersections and unions are summed per class over all images first, then averaged the same
  way (the usual dataset-level mIoU; not the mean of per-image mIoUs).
* **Depth and normal errors over a set** pool all valid pixels of all images (pixel-weighted); an image or set with
  no valid pixel has error NaN.

:func:`metric_change` and :func:`stealth_success` turn clean and adversarial metrics into changes and the stealth
criterion of the paper: the target task worsens by at least a margin while every other task stays within a
tolerance.  Relative changes divide by ``|clean|``; a zero clean value gives 0 when nothing changed, else +-inf.
"""


from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from advbench.errors import ConfigError, InputError, UnknownNameError
from advbench.models.task_heads import (
    IGNORE_INDEX,
    TASK_HEADS,
    check_pair,
    check_tasks,
    get_task,
    higher_is_better,
    shape_text,
)

#: Angular thresholds (degrees) whose pixel shares are reported for normals.
ANGLE_THRESHOLDS: tuple[float, ...] = (11.25, 22.5, 30.0)


def _labels(pred: torch.Tensor, target: torch.Tensor, num_classes: int | None) -> tuple[torch.Tensor, int]:
    """Class-id predictions ``(B,H,W)`` and the number of classes from logits ``(B,C,H,W)`` or ids ``(B,H,W)``."""
    if isinstance(pred, torch.Tensor) and pred.dim() == 4:
        check_pair("seg", pred, target, None)
        if num_classes is not None and pred.shape[1] != num_classes:
            raise InputError(f"seg: logits have {pred.shape[1]} classes but num_classes={num_classes}; evaluate with "
                             "the model's number of classes")
        return pred.argmax(1), int(pred.shape[1])
    if not isinstance(pred, torch.Tensor) or pred.dim() != 3 or pred.is_floating_point():
        raise InputError(f"seg: pred must be logits (B,C,H,W) or integer class ids (B,H,W), got {shape_text(pred)}")
    if num_classes is None:
        raise InputError("seg: pass num_classes= when pred holds class ids instead of logits")
    if not isinstance(target, torch.Tensor) or target.shape != pred.shape:
        raise InputError(f"seg: pred {shape_text(pred)} and target {shape_text(target)} must have the same shape")
    return pred, num_classes


def seg_iou_counts(pred: torch.Tensor, target: torch.Tensor,
                   num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and class, the intersection and the union pixel counts, each ``(B, C)`` float64.

    ``pred`` is logits ``(B,C,H,W)`` (argmax taken) or class ids ``(B,H,W)`` (then ``num_classes`` is needed).
    Pixels whose gt is 255 are left out of both counts.
    """
    labels, c = _labels(pred, target, num_classes)
    valid = target != IGNORE_INDEX
    classes = torch.arange(c, device=labels.device).view(1, c, 1, 1)
    p = (labels.unsqueeze(1) == classes) & valid.unsqueeze(1)
    g = target.unsqueeze(1) == classes
    inter = (p & g).flatten(2).sum(2).double()
    union = (p | g).flatten(2).sum(2).double()
    return inter, union


def miou_from_counts(inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """Mean IoU over the classes with a non-zero union (last dimension); NaN where there is none."""
    present = union > 0
    iou = torch.where(present, inter / union.clamp(min=1), torch.zeros_like(inter))
    count = present.sum(-1)
    return torch.where(count > 0, iou.sum(-1) / count.clamp(min=1), torch.full_like(iou[..., 0], math.nan))


def seg_miou(pred: torch.Tensor, target: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """mIoU of each image ``(B,)`` float64 (see the module doc for the convention)."""
    return miou_from_counts(*seg_iou_counts(pred, target, num_classes))


def depth_sums(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: sum of ``|pred - gt|``, sum of ``|pred - gt| / gt`` and the count over valid pixels (float64)."""
    check_pair("depth", pred, target, 1)
    p, g = pred.detach().double(), target.detach().double()
    valid = g > 0
    err = torch.where(valid, (p - g).abs(), torch.zeros_like(p))
    rel = torch.where(valid, err / torch.where(valid, g, torch.ones_like(g)), torch.zeros_like(p))
    return err.flatten(1).sum(1), rel.flatten(1).sum(1), valid.flatten(1).sum(1).double()


def _safe_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def depth_abs_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Absolute error of each image ``(B,)`` float64: ``mean |pred - gt|`` in metres over valid pixels (NaN if none)."""
    abs_sum, _, count = depth_sums(pred, target)
    return _safe_mean(abs_sum, count)


def depth_rel_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative error of each image ``(B,)`` float64: ``mean |pred - gt| / gt`` over valid pixels (NaN if none)."""
    _, rel_sum, count = depth_sums(pred, target)
    return _safe_mean(rel_sum, count)


def normal_angles(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Angle in degrees between ``pred`` (normalised first) and ``gt`` per pixel ``(B,H,W)`` float64, and the valid
    mask ``(B,H,W)`` (gt != 0).  A zero prediction is 90 degrees from everything."""
    check_pair("normal", pred, target, 3)
    p = F.normalize(pred.detach().double(), dim=1, eps=1e-12)
    g = target.detach().double()
    valid = g.abs().sum(1) > 0
    cos = (p * F.normalize(g, dim=1, eps=1e-12)).sum(1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos)), valid


def normal_angular_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean angular error of each image ``(B,)`` in degrees over valid pixels (NaN if none)."""
    angles, valid = normal_angles(pred, target)
    total = torch.where(valid, angles, torch.zeros_like(angles)).flatten(1).sum(1)
    return _safe_mean(total, valid.flatten(1).sum(1).double())


def per_sample_metrics(outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], *,
                       num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """The headline metric of every task in ``outputs`` for each image: ``{task: (B,) float64}``.

    ``seg``: per-image mIoU; ``depth``: absolute error (m); ``normal``: mean angular error (degrees).
    """
    functions = {"seg": lambda p, t: seg_miou(p, t, num_classes), "depth": depth_abs_error,
                 "normal": normal_angular_error}
    result = {}
    for task in check_tasks(list(outputs), what="outputs"):
        if task not in targets:
            raise InputError(f"per_sample_metrics: no target for task '{task}'; targets hold "
                             f"{', '.join(targets) or 'nothing'}")
        if task not in functions:
            raise ConfigError(f"per_sample_metrics: task '{task}' has no per-sample metric")
        result[task] = functions[task](outputs[task], targets[task])
    return result


class MultiTaskMetrics:
    """Accumulates the metrics of several tasks over batches (``update`` / ``compute`` / ``reset`` / ``merge``).

    ``compute()`` gives the headline metric per task over everything seen so far; ``details()`` adds the
    secondary ones: seg ``miou`` and ``pixel_acc``; depth ``abs_err`` and ``rel_err``; normal ``angle_err`` and
    ``within_11.25`` / ``within_22.5`` / ``within_30`` (shares of valid pixels).  Set-level conventions are in
    the module doc.  ``num_classes`` is needed when ``seg`` is among the tasks.  Batches may live on any device;
    the counts accumulate on the CPU in float64.

    >>> metrics = MultiTaskMetrics(["depth"])
    >>> metrics.update({"depth": torch.full((1, 1, 1, 2), 2.0)}, {"depth": torch.tensor([[[[1.0, 4.0]]]])})
    >>> metrics.compute()
    {'depth': 1.5}
    """

    def __init__(self, tasks: Sequence[str], *, num_classes: int | None = None) -> None:
        self.tasks = check_tasks(tasks)
        if "seg" in self.tasks and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
            raise ConfigError(f"MultiTaskMetrics: num_classes must be a positive int when 'seg' is a task, got "
                              f"{num_classes!r}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        c = self.num_classes or 0
        self._inter = torch.zeros(c, dtype=torch.float64)
        self._union = torch.zeros(c, dtype=torch.float64)
        self._seg = torch.zeros(2, dtype=torch.float64)  # correct, labelled pixels
        self._depth = torch.zeros(3, dtype=torch.float64)  # abs sum, rel sum, valid pixels
        self._normal = torch.zeros(2 + len(ANGLE_THRESHOLDS), dtype=torch.float64)  # angle sum, valid, within...

    def update(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> None:
        """Add a batch: model ``outputs`` (seg logits or class ids) and ``targets``, both keyed by task."""
        for task in self.tasks:
            if task not in outputs or task not in targets:
                raise InputError(f"MultiTaskMetrics.update: task '{task}' needs both an output and a target; got "
                                 f"outputs for {', '.join(outputs) or 'nothing'} and targets for "
                                 f"{', '.join(targets) or 'nothing'}")
            pred, target = outputs[task], targets[task]
            if task == "seg":
                inter, union = seg_iou_counts(pred, target, self.num_classes)
                self._inter += inter.sum(0).to(self._inter)
                self._union += union.sum(0).to(self._union)
                labels, _ = _labels(pred, target, self.num_classes)
                valid = target != IGNORE_INDEX
                self._seg += torch.tensor([float(((labels == target) & valid).sum()), float(valid.sum())],
                                          dtype=torch.float64)
            elif task == "depth":
                abs_sum, rel_sum, count = depth_sums(pred, target)
                self._depth += torch.stack([abs_sum.sum(), rel_sum.sum(), count.sum()]).to(self._depth)
            elif task == "normal":
                angles, valid = normal_angles(pred, target)
                a = angles[valid]
                within = [float((a < t).sum()) for t in ANGLE_THRESHOLDS]
                self._normal += torch.tensor([float(a.sum()), float(a.numel()), *within], dtype=torch.float64)
            else:
                raise ConfigError(f"MultiTaskMetrics: task '{task}' has no accumulator")

    def merge(self, other: MultiTaskMetrics) -> MultiTaskMetrics:
        """Add ``other``'s accumulated counts to this one (same tasks and classes); returns ``self``."""
        if not isinstance(other, MultiTaskMetrics) or other.tasks != self.tasks or other.num_classes != \
                self.num_classes:
            raise ConfigError("MultiTaskMetrics.merge needs another MultiTaskMetrics with the same tasks and "
                              "num_classes")
        for name in ("_inter", "_union", "_seg", "_depth", "_normal"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def details(self) -> dict[str, dict[str, float]]:
        """Every metric per task (NaN where nothing valid was seen)."""
        def ratio(a: torch.Tensor, b: torch.Tensor) -> float:
            return float(a / b) if float(b) > 0 else math.nan

        result: dict[str, dict[str, float]] = {}
        for task in self.tasks:
            if task == "seg":
                result[task] = {"miou": float(miou_from_counts(self._inter, self._union)),
                                "pixel_acc": ratio(self._seg[0], self._seg[1])}
            elif task == "depth":
                result[task] = {"abs_err": ratio(self._depth[0], self._depth[2]),
                                "rel_err": ratio(self._depth[1], self._depth[2])}
            elif task == "normal":
                result[task] = {"angle_err": ratio(self._normal[0], self._normal[1]),
                                **{f"within_{t:g}": ratio(self._normal[2 + i], self._normal[1])
                                   for i, t in enumerate(ANGLE_THRESHOLDS)}}
        return result

    def compute(self) -> dict[str, float]:
        """The headline metric per task: ``{'seg': mIoU, 'depth': abs error (m), 'normal': angle error (deg)}``."""
        return {task: values[get_task(task).metric] for task, values in self.details().items()}


def evaluate_multitask(model: torch.nn.Module, x: torch.Tensor, targets: Mapping[str, torch.Tensor], *,
                       tasks: Sequence[str] | None = None, batch_size: int = 32,
                       details: bool = False) -> dict[str, Any]:
    """Headline metrics ``{task: value}`` of ``model`` on images ``x`` (eval mode, no gradients, state restored).

    ``tasks`` defaults to the model's tasks (``model.tasks``); each needs a target.  With ``details=True`` the
    result is :meth:`MultiTaskMetrics.details` instead.
    """
    chosen = check_tasks(tasks if tasks is not None else getattr(model, "tasks", ()), what="tasks",
                         available=getattr(model, "tasks", None))
    num_classes = getattr(model, "num_classes", None) if "seg" in chosen else None
    metrics = MultiTaskMetrics(chosen, num_classes=num_classes)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"evaluate_multitask: batch_size must be a positive int, got {batch_size!r}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                outputs = model(x[start:start + batch_size])
                metrics.update(outputs, {t: targets[t][start:start + batch_size] for t in chosen if t in targets})
    finally:
        model.train(was_training)
    return metrics.details() if details else metrics.compute()


Number = float | torch.Tensor


def _relative(delta: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``delta / |base|``; 0 where both are 0, +-inf where only ``base`` is 0."""
    zero = base == 0
    safe = torch.where(zero, torch.ones_like(base), base.abs())
    inf = torch.where(delta == 0, torch.zeros_like(delta), torch.sign(delta) * math.inf)
    return torch.where(zero, inf, delta / safe)


def _pack(values: Sequence[Number]) -> tuple[list[torch.Tensor], bool]:
    scalar = not any(isinstance(v, torch.Tensor) for v in values)
    return [torch.as_tensor(v, dtype=torch.float64) for v in values], scalar


def degradation(task: str, clean: Number, adv: Number) -> Number:
    """Relative worsening of ``task``'s headline metric: positive when ``adv`` is worse than ``clean``.

    ``(clean - adv) / |clean|`` when higher is better (mIoU), ``(adv - clean) / |clean|`` when lower is better
    (errors).  Floats give a float; tensors (e.g. per-sample metrics) give a float64 tensor.

    >>> degradation("seg", 0.5, 0.25), degradation("depth", 0.5, 0.25)
    (0.5, -0.5)
    """
    (c, a), scalar = _pack([clean, adv])
    sign = -1.0 if higher_is_better(task) else 1.0
    value = _relative(sign * (a - c), c)
    return float(value) if scalar else value


def metric_change(clean: Mapping[str, Number], adv: Mapping[str, Number]) -> dict[str, dict[str, Any]]:
    """Per task: ``clean``, ``adv``, ``change`` (adv - clean), ``relative_change`` (change / |clean|),
    ``higher_is_better`` and ``degradation`` (the relative change in the worse direction, see :func:`degradation`).

    Both mappings must hold the same tasks (headline metrics, floats or per-sample tensors).
    """
    tasks = _same_tasks(clean, adv, "metric_change")
    result = {}
    for task in tasks:
        (c, a), scalar = _pack([clean[task], adv[task]])
        change, rel = a - c, _relative(a - c, c)
        result[task] = {
            "clean": clean[task], "adv": adv[task], "higher_is_better": higher_is_better(task),
            "change": float(change) if scalar else change, "relative_change": float(rel) if scalar else rel,
            "degradation": degradation(task, clean[task], adv[task]),
        }
    return result


def _same_tasks(clean: Mapping[str, Number], adv: Mapping[str, Number], where: str) -> tuple[str, ...]:
    if not isinstance(clean, Mapping) or not isinstance(adv, Mapping):
        raise ConfigError(f"{where}: pass clean and adversarial metrics as dicts {{task: value}}")
    tasks = check_tasks(list(clean), what=f"{where}: clean metrics")
    if set(adv) != set(clean):
        raise ConfigError(f"{where}: clean metrics hold tasks {', '.join(tasks)} but adversarial metrics hold "
                          f"{', '.join(adv) or 'none'}; measure the same tasks on both")
    return tasks


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"stealth_success: {name} must be a finite number >= 0 (a relative change, e.g. 0.1 for "
                          f"10%), got {value!r}")
    return float(value)


def stealth_success(clean_metrics: Mapping[str, Number], adv_metrics: Mapping[str, Number], target: str, *,
                    margin: float, tolerance: float) -> bool | torch.Tensor:
    """Whether an attack on ``target`` was stealthy (Guo, Zhang, Li et al., arXiv 2411.17936):
    ``degradation(target) >= margin`` and ``degradation(j) <= tolerance`` for every other task ``j``.

    Degradations are relative changes in the worse direction (:func:`degradation`), so ``margin=0.1`` asks for the
    target to get at least 10% worse and ``tolerance=0.05`` lets every other task get at most 5% worse (improving
    is always fine).  A NaN metric never counts as a success.  Floats give a bool; per-sample tensors give a bool
    tensor.  ``margin < 0`` or ``tolerance < 0`` raise :class:`ConfigError`; a ``target`` that is not a known task
    raises :class:`UnknownNameError`, and one that is not among the measured tasks :class:`ConfigError`, both
    listing the measured (the model's) tasks.

    >>> stealth_success({"seg": 0.6, "depth": 0.5}, {"seg": 0.3, "depth": 0.51}, "seg", margin=0.2, tolerance=0.05)
    True
    """
    margin = _non_negative("margin", margin)
    tolerance = _non_negative("tolerance", tolerance)
    tasks = _same_tasks(clean_metrics, adv_metrics, "stealth_success")
    if not isinstance(target, str) or target not in TASK_HEADS:
        raise UnknownNameError(f"stealth_success: unknown target task {target!r}; the model's tasks are "
                               f"{', '.join(tasks)}")
    if target not in tasks:
        raise ConfigError(f"stealth_success: target task '{target}' is not among the model's tasks "
                          f"({', '.join(tasks)}); pick one of them")
    values, scalar = _pack([degradation(t, clean_metrics[t], adv_metrics[t]) for t in tasks])
    ok = values[tasks.index(target)] >= margin
    for task, value in zip(tasks, values, strict=True):
        if task != target:
            ok = ok & (value <= tolerance)
    return bool(ok) if scalar else ok
