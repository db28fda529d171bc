"""The in-memory container every data set loader returns: :class:`ClassificationData`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advbench.errors import DatasetError

#: Lower bound applied to per-channel standard deviations so normalisation never divides by ~0.
STD_FLOOR = 1e-3


@dataclass(frozen=True, eq=False)
class ClassificationData:
    """An image classification data set held in memory as tensors.

    Images are float32 NCHW tensors with values in [0, 1]; labels are int64 class indices in
    ``[0, num_classes)``.  The fields are validated on construction, so a loader cannot hand out a
    data set that breaks these contracts.  Instances are shared (``load_dataset`` caches them), so
    treat the tensors as read-only: copy before modifying them in place.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise DatasetError(f"data set '{self.name}': num_classes must be a positive int, got {self.num_classes!r}")
        if len(self.class_names) != self.num_classes:
            raise DatasetError(
                f"data set '{self.name}': class_names has {len(self.class_names)} entries but num_classes is "
                f"{self.num_classes}; give one name per class"
            )
        shape = None
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            check_images(self.name, f"x_{split}", x)
            check_labels(self.name, f"y_{split}", y, len(x), self.num_classes)
            if shape is not None and tuple(x.shape[1:]) != shape:
                raise DatasetError(
                    f"data set '{self.name}': x_test has image shape {tuple(x.shape[1:])} but x_train has {shape}"
                )
            shape = tuple(x.shape[1:])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of ``x_train`` (std floored at 1e-3).

        Meant for a model's input-normalisation layer.  The std is the population std (no Bessel
        correction), computed in float64.
        """
        x = self.x_train.detach().to(torch.float64)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3), correction=0).clamp_min(STD_FLOOR)
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def check_images(name: str, field: str, x: object) -> None:
    """Raise :class:`DatasetError` unless ``x`` is a non-empty float32 NCHW tensor in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise DatasetError(f"data set '{name}': {field} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32 or x.ndim != 4:
        raise DatasetError(
            f"data set '{name}': {field} must be a float32 NCHW tensor, got dtype {x.dtype} with shape "
            f"{tuple(x.shape)}"
        )
    if len(x) == 0:
        raise DatasetError(f"data set '{name}': {field} is empty; every split needs at least one image")
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):
        raise DatasetError(f"data set '{name}': {field} values must lie in [0, 1], found [{lo}, {hi}]")


def check_labels(name: str, field: str, y: object, n: int, num_classes: int) -> None:
    """Raise :class:`DatasetError` unless ``y`` is an int64 vector of ``n`` labels in range."""
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.ndim != 1:
        desc = f"dtype {y.dtype} with shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise DatasetError(f"data set '{name}': {field} must be an int64 vector, got {desc}")
    if len(y) != n:
        raise DatasetError(f"data set '{name}': {field} has {len(y)} labels for {n} images")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DatasetError(
            f"data set '{name}': {field} labels must lie in [0, {num_classes}), found [{lo}, {hi}]"
        )


def uint8_images(array: np.ndarray) -> torch.Tensor:
    """Convert a uint8 NCHW array (0..255) to a float32 tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8)).to(torch.float32).div_(255.0)


def int64_labels(array: np.ndarray) -> torch.Tensor:
    """Convert an integer label array to an int64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))


def split_data(name: str, x: torch.Tensor, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
               class_names: tuple[str, ...]) -> ClassificationData:
    """A :class:`ClassificationData` from all images ``x``, their labels and the train/test index arrays."""
    return ClassificationData(
        name=name,
        x_train=x[train].contiguous(),
        y_train=int64_labels(labels[train]),
        x_test=x[test].contiguous(),
        y_test=int64_labels(labels[test]),
        num_classes=len(class_names),
        class_names=class_names,
    )
