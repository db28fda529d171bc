"""The dense-prediction task heads of a multi-task model (Guo, Zhang, Li et al., arXiv 2411.17936).

Each task (``seg``, ``depth``, ``normal``) is one :class:`TaskHead` in the :data:`TASK_HEADS` registry: its output
channels and activation, its per-sample training loss, its target format and the name of its headline metric.
Models (:mod:`advbench.models.multitask`), data loaders (:mod:`advbench.datasets.multitask`) and the metrics
(:mod:`advbench.multitask.metrics`) all read the heads from here.

* ``seg`` -- int64 class ids ``(N,H,W)``; :data:`IGNORE_INDEX` (255) marks unlabelled pixels.  Outputs are logits.
* ``depth`` -- float depth ``(N,1,H,W)`` in metres; 0 marks invalid pixels.  Outputs go through softplus.
* ``normal`` -- unit normals ``(N,3,H,W)``; the zero vector marks invalid pixels.  Outputs are L2-normalised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from advbench.errors import ConfigError, InputError
from advbench.registry import Registry

IGNORE_INDEX = 255


#: The tasks in their canonical order (the order of heads, reports and CLI defaults).
DEFAULT_TASKS: tuple[str, ...] = ("seg", "depth", "normal")


#: Allowed deviation of a target normal's length from 1.
UNIT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class TaskHead:
    """What defines one dense-prediction task: its output, loss, target format and headline metric.

    ``channels(num_classes)`` is the head's number of output channels, ``activate`` maps raw head outputs to
    predictions (identity for logits), ``loss(pred, target)`` returns the per-sample loss ``(B,)``,
    ``check_target(target, num_classes, where)`` raises :class:`InputError` for a malformed target, and
    ``metric`` names the headline metric, better when higher if ``higher_is_better``.
    """

    name: str
    description: str
    metric: str
    higher_is_better: bool
    channels: Callable[[int], int]
    activate: Callable[[torch.Tensor], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    check_target: Callable[[torch.Tensor, int, str], None]


#: Task name -> :class:`TaskHead`.  Register a new task with ``TASK_HEADS.add(name, TaskHead(...))``.
TASK_HEADS: Registry[TaskHead] = Registry("task")


def get_task(name: str) -> TaskHead:
    """The :class:`TaskHead` called ``name``; an unknown name raises :class:`UnknownNameError` listing the tasks."""
    if not isinstance(name, str):
        raise ConfigError(f"a task name must be a string such as 'seg', got {type(name).__name__} {name!r}")
    return TASK_HEADS.get(name)


def higher_is_better(task: str) -> bool:
    """Whether a higher headline metric is better for ``task`` (mIoU: True; depth and normal errors: False)."""
    return get_task(task).higher_is_better


def check_tasks(tasks: str | Sequence[str], *, available: Sequence[str] | None = None,
                what: str = "tasks") -> tuple[str, ...]:
    """Validate a non-empty list of distinct task names (or ``"seg,depth"``) and return it in canonical order.

    Unknown names raise :class:`UnknownNameError` listing the known tasks; a name outside ``available`` (the
    heads of a model, the targets of a data set) raises :class:`ConfigError` listing those.
    """
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    try:
        names = list(tasks)
    except TypeError:
        raise ConfigError(f"{what} must be a list of task names such as ('seg', 'depth'), got "
                          f"{type(tasks).__name__}") from None
    if not names:
        raise ConfigError(f"{what} must name at least one task; known tasks: {', '.join(_ordered(TASK_HEADS))}")
    for name in names:
        get_task(name)
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} lists a task twice ({', '.join(names)}); give each task once")
    if available is not None:
        missing = [n for n in names if n not in available]
        if missing:
            raise ConfigError(f"{what}: {', '.join(missing)} is not among the available tasks "
                              f"({', '.join(available) or 'none'}); pick from those")
    return _ordered(names)


def _ordered(names: Sequence[str] | Registry[TaskHead]) -> tuple[str, ...]:
    rank = {t: i for i, t in enumerate(DEFAULT_TASKS)}
    return tuple(sorted(names, key=lambda t: (rank.get(t, len(rank)), t)))


def shape_text(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def check_pair(task: str, pred: torch.Tensor, target: torch.Tensor, channels: int | None) -> None:
    """``pred`` (B,channels,H,W) and ``target`` of the same batch and size; ``channels=None`` skips that check."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise InputError(f"{task}: pred and target must be tensors, got {type(pred).__name__} and "
                         f"{type(target).__name__}")
    if pred.dim() != 4 or (channels is not None and pred.shape[1] != channels):
        want = f"(B,{channels},H,W)" if channels is not None else "(B,C,H,W)"
        raise InputError(f"{task}: pred must be {want}, got {shape_text(pred)}")
    spatial = target.shape[-2:] if target.dim() >= 2 else None
    if len(target) != len(pred) or spatial != pred.shape[-2:]:
        raise InputError(f"{task}: pred {shape_text(pred)} and target {shape_text(target)} must share batch size, "
                         "height and width")


def _check_seg_target(target: torch.Tensor, num_classes: int, where: str) -> None:
    if not isinstance(target, torch.Tensor) or target.dim() != 3 or target.dtype != torch.int64:
        raise InputError(f"{where}: seg targets must be an int64 tensor (N,H,W) of class ids, got "
                         f"{getattr(target, 'dtype', type(target).__name__)} {shape_text(target)}")
    bad = (target != IGNORE_INDEX) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        value = int(target[bad][0])
        raise InputError(f"{where}: seg target holds class id {value}, outside 0..{num_classes - 1} (and not the "
                         f"ignore id {IGNORE_INDEX}); fix the labels or raise the number of classes")


def _check_depth_target(target: torch.Tensor, num_classes: int, where: str) -> None:
    del num_classes
    if (not isinstance(target, torch.Tensor) or target.dim() != 4 or target.shape[1] != 1
            or not target.is_floating_point()):
        raise InputError(f"{where}: depth targets must be a float tensor (N,1,H,W) in metres, got "
                         f"{getattr(target, 'dtype', type(target).__name__)} {shape_text(target)}")
    if not bool(torch.isfinite(target).all()) or float(target.min()) < 0:
        raise InputError(f"{where}: depth targets must be finite and >= 0 (0 marks an invalid pixel); replace NaN, "
                         "inf and negative values by 0")


def _check_normal_target(target: torch.Tensor, num_classes: int, where: str) -> None:
    del num_classes
    if (not isinstance(target, torch.Tensor) or target.dim() != 4 or target.shape[1] != 3
            or not target.is_floating_point()):
        raise InputError(f"{where}: normal targets must be a float tensor (N,3,H,W) of unit vectors, got "
                         f"{getattr(target, 'dtype', type(target).__name__)} {shape_text(target)}")
    if not bool(torch.isfinite(target).all()):
        raise InputError(f"{where}: normal targets hold NaN or inf; use the zero vector for invalid pixels")
    norm = target.double().norm(dim=1)
    bad = (norm != 0) & ((norm - 1).abs() > UNIT_TOLERANCE)
    if bool(bad.any()):
        raise InputError(f"{where}: normal targets must be unit vectors or exactly zero (invalid); found a vector of "
                         f"length {float(norm[bad][0]):.4f}; normalise them, e.g. torch.nn.functional.normalize(n, "
                         "dim=1)")


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per image ``(B,)``: the mean over its labelled pixels (gt != 255), 0 if it has none."""
    check_pair("seg", logits, target, None)
    pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (target != IGNORE_INDEX).flatten(1)
    return pixel.flatten(1).sum(1) / valid.sum(1).clamp(min=1)


def depth_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 per image ``(B,)``: ``mean |pred - gt|`` over its valid pixels (gt > 0), 0 if it has none."""
    check_pair("depth", pred, target, 1)
    valid = (target > 0).to(pred.dtype)
    return ((pred - target).abs() * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)


def normal_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - cos(pred, gt)`` per image ``(B,)`` over valid pixels (gt != 0), 0 if it has none.

    ``pred`` is normalised first, so unnormalised outputs are fine.
    """
    check_pair("normal", pred, target, 3)
    valid = (target.abs().sum(1) > 0).to(pred.dtype)
    cos = (F.normalize(pred, dim=1, eps=1e-12) * target).sum(1)
    return ((1 - cos) * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)


TASK_HEADS.add("seg", TaskHead(
    name="seg", description="semantic segmentation (logits per class; 255 = ignore)", metric="miou",
    higher_is_better=True, channels=lambda num_classes: num_classes, activate=lambda raw: raw, loss=seg_loss,
    check_target=_check_seg_target))


TASK_HEADS.add("depth", TaskHead(
    name="depth", description="depth in metres (softplus output; 0 = invalid in targets)", metric="abs_err",
    higher_is_better=False, channels=lambda num_classes: 1, activate=F.softplus, loss=depth_loss,
    check_target=_check_depth_target))


TASK_HEADS.add("normal", TaskHead(
    name="normal", description="surface normals (L2-normalised output; zero vector = invalid in targets)",
    metric="angle_err", higher_is_better=False, channels=lambda num_classes: 3,
    activate=lambda raw: F.normalize(raw, dim=1, eps=1e-6), loss=normal_loss, check_target=_check_normal_target))
