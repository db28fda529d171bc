"""Box geometry: rotated boxes, their corners, the minimum-area rectangle of points, polygon clipping.

Rotated boxes are ``(cx, cy, w, h, angle)`` in pixels and degrees, in the *le90* convention used by
mmrotate (there in radians): image coordinates (x right, y down), the side of length ``w`` points along
``(cos angle, sin angle)`` -- so a positive angle turns clockwise on screen, as in OpenCV --, ``w >= h``
and ``angle`` in ``[-90, 90)``.  A square has ``angle`` in ``[-45, 45)``.  These rules make the
representation of every non-degenerate rectangle unique.

All functions are pure numpy; none needs OpenCV.
"""

from __future__ import annotations

import math

import numpy as np

#: Angles are rounded to this many decimals before normalising, so float noise next to a boundary
#: (89.9999999 vs -90) cannot flip the representation.
ANGLE_DECIMALS = 6


def canonical_rbox(cx: float, cy: float, w: float, h: float, angle: float) -> tuple[float, float, float, float, float]:
    """Return the le90 form of a rotated box: ``w >= h`` and ``angle`` in ``[-90, 90)`` (``[-45, 45)`` if square)."""
    if w < h:
        w, h, angle = h, w, angle + 90.0
    angle = round(angle, ANGLE_DECIMALS)
    if math.isclose(w, h, rel_tol=1e-9):
        angle = (angle + 45.0) % 90.0 - 45.0
    else:
        angle = (angle + 90.0) % 180.0 - 90.0
    return cx, cy, w, h, angle


def rbox_corners(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    """The four corners ``(4, 2)`` of a rotated box, in order around the box."""
    t = math.radians(angle)
    u = np.array([math.cos(t), math.sin(t)]) * (w / 2.0)
    v = np.array([-math.sin(t), math.cos(t)]) * (h / 2.0)
    c = np.array([cx, cy])
    with np.errstate(all="ignore"):
        return np.stack([c - u - v, c + u - v, c + u + v, c - u + v])


def points_xyxy(points: np.ndarray) -> tuple[float, float, float, float]:
    """The axis-aligned box ``(x_min, y_min, x_max, y_max)`` around ``points`` of shape ``(K, 2)``."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of ``(K, 2)`` points, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted({(float(x), float(y)) for x, y in points})
    if len(pts) <= 2:
        return np.asarray(pts, dtype=np.float64).reshape(-1, 2)

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def chain(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2 and cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = chain(pts), chain(pts[::-1])
    return np.asarray(lower[:-1] + upper[:-1], dtype=np.float64)


def min_area_rect(points: np.ndarray) -> tuple[float, float, float, float, float]:
    """The minimum-area rectangle around ``(K, 2)`` points as a canonical rotated box (rotating calipers).

    One side of the optimal rectangle lies on an edge of the convex hull (Freeman & Shapira, 1975), so
    every hull edge direction is tried.  Collinear or coincident points give a rectangle of zero width
    or height; callers reject those as degenerate.
    """
    hull = convex_hull(points)
    if len(hull) < 3:
        x0, y0, x1, y1 = points_xyxy(np.asarray(points, dtype=np.float64))
        dx, dy = x1 - x0, y1 - y0
        length = math.hypot(dx, dy)
        angle = math.degrees(math.atan2(dy, dx)) if length > 0 else 0.0
        return canonical_rbox((x0 + x1) / 2.0, (y0 + y1) / 2.0, length, 0.0, angle)
    best: tuple[float, float, float, float, float] | None = None
    best_area = math.inf
    with np.errstate(all="ignore"):
        edges = np.roll(hull, -1, axis=0) - hull
        for ex, ey in edges:
            norm = math.hypot(ex, ey)
            if norm == 0 or not math.isfinite(norm):
                continue
            u = np.array([ex, ey]) / norm
            v = np.array([-u[1], u[0]])
            a, b = hull @ u, hull @ v
            w, h = float(a.max() - a.min()), float(b.max() - b.min())
            area = w * h
            if area < best_area:
                center = u * (a.max() + a.min()) / 2.0 + v * (b.max() + b.min()) / 2.0
                best_area = area
                best = (float(center[0]), float(center[1]), w, h, math.degrees(math.atan2(u[1], u[0])))
    if best is None:
        return (math.nan, math.nan, 0.0, 0.0, 0.0)
    return canonical_rbox(*best)


def polygon_area(points: np.ndarray) -> float:
    """Unsigned area of a simple polygon given by its ``(K, 2)`` vertices in order (shoelace formula)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return 0.0
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def clip_polygon(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """The part of a convex polygon ``(K, 2)`` inside the image ``[0, width] x [0, height]``, as ``(M, 2)`` vertices.

    Sutherland-Hodgman clipping (Sutherland & Hodgman, CACM 1974) against the four image edges in turn;
    a polygon that lies outside gives an empty ``(0, 2)`` array.  (DOTA's devkit likewise intersects each
    oriented object with an image patch and keeps it by its visible fraction; Xia et al., CVPR 2018.)
    """
    poly = [tuple(map(float, p)) for p in np.asarray(points, dtype=np.float64).reshape(-1, 2)]
    # one half-plane per image edge: (axis, bound, sign) keeps the points with sign * (p[axis] - bound) >= 0
    edges = ((0, 0.0, 1.0), (0, float(width), -1.0), (1, 0.0, 1.0), (1, float(height), -1.0))
    for axis, bound, sign in edges:
        clipped: list[tuple[float, ...]] = []
        for i, current in enumerate(poly):
            previous = poly[i - 1]
            cur_in, prev_in = sign * (current[axis] - bound) >= 0, sign * (previous[axis] - bound) >= 0
            if cur_in != prev_in:
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                clipped.append(tuple(a + t * (b - a) for a, b in zip(previous, current, strict=True)))
            if cur_in:
                clipped.append(current)
        poly = clipped
    return np.asarray(poly, dtype=np.float64).reshape(-1, 2)
