"""One parsed box (:class:`BoxRecord`), its checks against the image, and stacking records into tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from advbench.errors import DatasetError

XYXY = tuple[float, float, float, float]
RBOX = tuple[float, float, float, float, float]


@dataclass(frozen=True)
class BoxRecord:
    """A box read from one annotation line: class index, axis-aligned box, optional rotated box.

    ``where`` names the file and line it came from (``"'bb/a.txt' line 3"``) for error messages.
    """

    label: int
    xyxy: XYXY
    rbox: RBOX | None
    where: str


def line_where(path: object, lineno: int) -> str:
    """The standard location prefix for errors: ``"'<path>' line <n>"``."""
    return f"'{path}' line {lineno}"


def check_geometry(record: BoxRecord) -> BoxRecord:
    """Reject non-finite coordinates and boxes of zero or negative width or height."""
    values = record.xyxy + (record.rbox or ())
    if not all(math.isfinite(v) for v in values):
        raise DatasetError(f"{record.where}: box coordinates are not finite ({values}); fix the numbers")
    x0, y0, x1, y1 = record.xyxy
    if x1 <= x0 or y1 <= y0:
        raise DatasetError(
            f"{record.where}: degenerate box (width {x1 - x0:g}, height {y1 - y0:g}); boxes need x_max > x_min and "
            "y_max > y_min -- fix or delete the line"
        )
    if record.rbox is not None and (record.rbox[2] <= 0 or record.rbox[3] <= 0):
        raise DatasetError(
            f"{record.where}: degenerate rotated box (w {record.rbox[2]:g}, h {record.rbox[3]:g}); its corner points "
            "must span an area -- fix or delete the line"
        )
    return record


def check_in_image(record: BoxRecord, size: tuple[int, int], *, clip: bool = False) -> BoxRecord:
    """Return ``record`` if its axis-aligned box lies inside the ``(width, height)`` image.

    With ``clip=True`` a box that sticks out is clipped to the image (the rotated box is kept as is); a
    box with no area inside the image is an error either way.
    """
    check_geometry(record)
    w, h = size
    x0, y0, x1, y1 = record.xyxy
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return record
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))
    if not clip or cx1 <= cx0 or cy1 <= cy0:
        hint = "fix the coordinates" if not clip else "it has no area inside the image; delete the line"
        if not clip:
            hint += " or load with clip=true to clip boxes to the image"
        raise DatasetError(
            f"{record.where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w}x{h} image; {hint}"
        )
    return replace(record, xyxy=(cx0, cy0, cx1, cy1))


def stack_records(records: Sequence[BoxRecord]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(boxes (N,4) float32, labels (N,) int64, rotated (N,5) float32 or None)``.

    Rotated boxes are returned only if every record has one.
    """
    boxes = torch.tensor([r.xyxy for r in records], dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([r.label for r in records], dtype=torch.int64).reshape(-1)
    rotated = None
    if records and all(r.rbox is not None for r in records):
        rotated = torch.tensor([r.rbox for r in records], dtype=torch.float32).reshape(-1, 5)
    return boxes, labels, rotated
