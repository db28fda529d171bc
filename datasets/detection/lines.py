"""Parsers for one annotation line of EVD4UAV, DOTA and VisDrone label files.

Each parser takes the line and its location (``where``, see :func:`records.line_where`) and returns a
:class:`~advbench.datasets.detection.records.BoxRecord`, or ``None`` for a line that holds no box
(blank, or a VisDrone category that is skipped).  Anything malformed raises
:class:`~advbench.errors.DatasetError` naming the file and line -- never another exception type, which
``tests/test_detection_data.py`` checks by fuzzing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from advbench.datasets.detection.geometry import canonical_rbox, min_area_rect, points_xyxy, rbox_corners
from advbench.datasets.detection.records import BoxRecord, check_geometry
from advbench.errors import DatasetError

#: EVD4UAV token counts (Sun, Guo et al., arXiv 2403.05422; the rotated encoding is unverified, so sniffed).
EVD4UAV_FORMATS = {
    5: "class x_min y_min x_max y_max",
    6: "class cx cy w h angle",
    9: "class x1 y1 x2 y2 x3 y3 x4 y4",
    10: "x1 y1 x2 y2 x3 y3 x4 y4 category difficult",
}


def parse_float(token: str, where: str, what: str) -> float:
    """``float(token)``, or a DatasetError if it is not a finite number."""
    try:
        value = float(token)
    except (ValueError, OverflowError):
        raise DatasetError(f"{where}: {what} '{token}' is not a number; fix the value") from None
    if not math.isfinite(value):
        raise DatasetError(f"{where}: {what} '{token}' is not a finite number; fix the value")
    return value


def parse_int(token: str, where: str, what: str) -> int:
    """An integer token (``'3'`` or an integral float such as ``'3.0'``), or a DatasetError."""
    try:
        return int(token)
    except (ValueError, OverflowError):
        pass
    value = parse_float(token, where, what)
    if not value.is_integer():
        raise DatasetError(f"{where}: {what} '{token}' is not an integer; fix the value")
    return int(value)


def lookup_class(name: str, class_names: Sequence[str], where: str, *, what: str = "category") -> int:
    """Index of ``name`` in ``class_names`` (case-insensitive), or a DatasetError listing the known names."""
    folded = [c.casefold() for c in class_names]
    try:
        return folded.index(name.casefold())
    except ValueError:
        raise DatasetError(f"{where}: unknown {what} '{name}'; known: {', '.join(class_names)}") from None


def class_index(token: str, class_names: Sequence[str], where: str) -> int:
    """A class id token checked against ``range(len(class_names))``."""
    label = parse_int(token, where, "class id")
    if not 0 <= label < len(class_names):
        known = ", ".join(f"{i} {n}" for i, n in enumerate(class_names))
        raise DatasetError(f"{where}: unknown class id {label}; known classes: {known}")
    return label


def corners_record(label: int, coords: Sequence[float], where: str) -> BoxRecord:
    """A record from 8 corner coordinates: axis-aligned hull plus minimum-area rotated rectangle."""
    points = np.asarray(coords, dtype=np.float64).reshape(4, 2)
    return check_geometry(BoxRecord(label, points_xyxy(points), min_area_rect(points), where))


def rotated_record(label: int, cx: float, cy: float, w: float, h: float, angle: float, where: str) -> BoxRecord:
    """A record from a rotated box; the axis-aligned box is the hull of its corners."""
    if w <= 0 or h <= 0:
        raise DatasetError(f"{where}: degenerate rotated box (w {w:g}, h {h:g}); w and h must be positive")
    rbox = canonical_rbox(cx, cy, w, h, angle)
    return check_geometry(BoxRecord(label, points_xyxy(rbox_corners(*rbox)), rbox, where))


def xyxy_record(label: int, x0: float, y0: float, x1: float, y1: float, where: str) -> BoxRecord:
    """A record from an axis-aligned box (no rotated box; see :func:`with_upright_rbox`)."""
    return check_geometry(BoxRecord(label, (x0, y0, x1, y1), None, where))


def with_upright_rbox(record: BoxRecord) -> BoxRecord:
    """``record`` with a rotated box; one that has none gets its axis-aligned box at angle 0 (-90 if tall)."""
    if record.rbox is not None:
        return record
    x0, y0, x1, y1 = record.xyxy
    rbox = canonical_rbox((x0 + x1) / 2.0, (y0 + y1) / 2.0, x1 - x0, y1 - y0, 0.0)
    return BoxRecord(record.label, record.xyxy, rbox, record.where)


def parse_evd4uav_line(line: str, where: str, class_names: Sequence[str]) -> BoxRecord | None:
    """Parse an EVD4UAV ``bb/`` or ``rotated_bb/`` line, sniffing the encoding by token count.

    5 tokens: ``class x_min y_min x_max y_max``; 6: ``class cx cy w h angle`` (degrees); 9: ``class`` and
    four corner points; 10: DOTA style, four corner points then the category *name* and a difficult flag.
    Class ids index ``class_names``.  Blank lines give ``None``.
    """
    tokens = line.split()
    if not tokens:
        return None
    if len(tokens) not in EVD4UAV_FORMATS:
        formats = "; ".join(f"{n} tokens: {f}" for n, f in EVD4UAV_FORMATS.items())
        raise DatasetError(f"{where}: expected 5, 6, 9 or 10 tokens but found {len(tokens)} ({formats})")
    if len(tokens) == 10:
        return parse_dota_line(line, where, class_names)
    label = class_index(tokens[0], class_names, where)
    values = [parse_float(t, where, f"value {i + 2}") for i, t in enumerate(tokens[1:])]
    if len(tokens) == 5:
        return xyxy_record(label, *values, where)
    if len(tokens) == 6:
        return rotated_record(label, *values, where)
    return corners_record(label, values, where)


def parse_dota_line(line: str, where: str, class_names: Sequence[str]) -> BoxRecord | None:
    """Parse a DOTA object line ``x1 y1 x2 y2 x3 y3 x4 y4 category difficult`` (Xia et al., CVPR 2018).

    The difficult flag (0 or 1) is checked but not kept.  Blank lines give ``None``.
    """
    tokens = line.split()
    if not tokens:
        return None
    if len(tokens) != 10:
        raise DatasetError(
            f"{where}: expected 10 tokens 'x1 y1 x2 y2 x3 y3 x4 y4 category difficult' but found {len(tokens)}"
        )
    coords = [parse_float(t, where, f"coordinate {i + 1}") for i, t in enumerate(tokens[:8])]
    label = lookup_class(tokens[8], class_names, where)
    if parse_int(tokens[9], where, "difficult flag") not in (0, 1):
        raise DatasetError(f"{where}: difficult flag '{tokens[9]}' must be 0 or 1")
    return corners_record(label, coords, where)


#: VisDrone-DET categories (Zhu et al., TPAMI 2021); 0 "ignored regions" and 11 "others" are skipped.
VISDRONE_SKIPPED = {0: "ignored regions", 11: "others"}


def parse_visdrone_line(line: str, where: str, class_names: Sequence[str]) -> BoxRecord | None:
    """Parse a VisDrone-DET line ``left,top,width,height,score,category,truncation,occlusion``.

    Categories 1..10 become labels 0..9 (``class_names[category - 1]``); categories 0 (ignored regions)
    and 11 (others) are validated and skipped (``None``).  A trailing comma is tolerated.
    """
    text = line.strip()
    if not text:
        return None
    fields = [f.strip() for f in text.split(",")]
    if len(fields) == 9 and not fields[-1]:
        fields = fields[:-1]
    if len(fields) != 8:
        raise DatasetError(
            f"{where}: expected 8 comma-separated fields 'left,top,width,height,score,category,truncation,"
            f"occlusion' but found {len(fields)}"
        )
    names = ("left", "top", "width", "height", "score", "category", "truncation", "occlusion")
    left, top, width, height = (parse_float(f, where, n) for f, n in zip(fields[:4], names[:4], strict=True))
    _, category, _, _ = (parse_int(f, where, n) for f, n in zip(fields[4:], names[4:], strict=True))
    if category in VISDRONE_SKIPPED:
        return None
    if not 1 <= category <= len(class_names):
        raise DatasetError(
            f"{where}: unknown VisDrone category {category}; valid categories are 0..{len(class_names) + 1}"
        )
    record = BoxRecord(category - 1, (left, top, left + width, top + height), None, where)
    return check_geometry(record)
