"""A seeded synthetic stand-in for EVD4UAV: :func:`generate_aerial_dataset` writes top-view road scenes.

The folder it writes has the ``evd4uav:`` layout (see :mod:`advbench.datasets.detection.evd4uav`), so
``load_detection_dataset(f"evd4uav:{path}?masks=true")`` reads it back::

    images/syn_0000.png          RGB top view: ground, one or two roads with lane markings, vehicles
    bb/syn_0000.txt              class x_min y_min x_max y_max      (0 Car, 1 Bus, 2 Truck)
    rotated_bb/syn_0000.txt      class cx cy w h angle               (le90, degrees; see geometry)
    attributes/syn_0000.txt      <colour> <type> per box
    masks/syn_0000.png           instance map, pixel value k = box k (1-based), 0 = background
    altitude_mapping.txt         <stem> <50m|70m|90m>
    snow_images.txt, non_snow_images.txt, README.txt

Vehicles are oriented rectangles with a roof (lighter on dark bodies, darker on light ones), a soft
shadow and pixel noise, mostly aligned with a road lane.  Their size shrinks with altitude (factors
:data:`ALTITUDE_SCALE`); rotated boxes never leave the image and never overlap.  Every random draw comes
from numpy generators seeded by ``(seed, image index)``, so a seed always gives byte-identical files.
This is test and demo data -- it shows nothing about real UAV imagery.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from advbench.datasets.detection.evd4uav_meta import EVD4UAV_ALTITUDES, EVD4UAV_CLASSES
from advbench.datasets.detection.geometry import canonical_rbox, rbox_corners
from advbench.errors import DatasetError

#: Vehicle scale per altitude group (lengths in pixels are multiplied by this).
ALTITUDE_SCALE = {"50m": 1.0, "70m": 0.72, "90m": 0.55}

#: Reference body colours (RGB) and how often each is drawn.
VEHICLE_COLOURS: dict[str, tuple[int, int, int]] = {
    "Black": (28, 28, 32),
    "Blue": (35, 65, 150),
    "Brown": (110, 72, 42),
    "Gray": (118, 120, 124),
    "Green": (42, 112, 55),
    "Red": (172, 32, 30),
    "Silver": (186, 189, 194),
    "White": (236, 236, 234),
    "Yellow": (226, 190, 42),
}
COLOUR_WEIGHTS = (0.18, 0.08, 0.04, 0.15, 0.04, 0.08, 0.16, 0.22, 0.05)

#: Per class (Car, Bus, Truck): draw probability and (length, width) ranges in pixels at 50m on a 192 px side.
CLASS_WEIGHTS = (0.8, 0.08, 0.12)
CLASS_DIMS = {0: ((20.0, 25.0), (9.0, 11.0)), 1: ((40.0, 48.0), (12.0, 14.0)), 2: ((30.0, 40.0), (11.0, 13.0))}

MIN_VEHICLES, MAX_VEHICLES = 3, 12
MIN_SIDE = 64  # smallest image side that still holds 3 buses
MARGIN = 1.0  # rotated boxes keep this many pixels from the border and from each other
SHADOW_OFFSET = (2.5, 2.0)  # at 50m; scaled like the vehicles


@dataclass(frozen=True)
class Vehicle:
    """One placed vehicle: class, colour and its rotated box ``(cx, cy, length, width, heading)``."""

    label: int
    colour: str
    cx: float
    cy: float
    length: float
    width: float
    heading: float  # degrees, direction of travel (front of the vehicle)

    def corners(self) -> np.ndarray:
        """The four corners ``(4, 2)`` of the body."""
        return rbox_corners(self.cx, self.cy, self.length, self.width, self.heading)

    def part(self, front: float, back: float, side: float) -> np.ndarray:
        """Corners of a sub-rectangle from ``back`` to ``front`` along the body (fractions of the half length,
        -1 = rear, 1 = front), ``side`` of the width wide, centred across."""
        t = math.radians(self.heading)
        u = np.array([math.cos(t), math.sin(t)]) * (self.length / 2.0)
        v = np.array([-math.sin(t), math.cos(t)]) * (self.width * side / 2.0)
        c = np.array([self.cx, self.cy])
        return np.stack([c + back * u - v, c + front * u - v, c + front * u + v, c + back * u + v])


def _overlap(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    """True unless some edge normal of the convex polygons ``a`` and ``b`` separates them by more than ``margin``."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        pa, pb = a @ normals.T, b @ normals.T
        if np.any((pa.max(axis=0) + margin < pb.min(axis=0)) | (pb.max(axis=0) + margin < pa.min(axis=0))):
            return False
    return True


def _pil(points: np.ndarray) -> list[tuple[float, float]]:
    """Box coordinates (pixel i spans [i, i+1)) to PIL's (pixel i is the point i)."""
    return [(float(x) - 0.5, float(y) - 0.5) for x, y in points]


def _shade(rgb: tuple[int, int, int] | np.ndarray, factor: float, add: float = 0.0) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c * factor + add, 0, 255)) for c in rgb)
    return r, g, b


def _ground(rng: np.random.Generator, size: tuple[int, int], snow: bool) -> Image.Image:
    """Green/brown (or snowy white) ground with blotchy low-frequency texture."""
    w, h = size
    if snow:
        base = np.array([232.0, 236.0, 242.0]) + rng.normal(0, 4, 3)
        spread = 10.0
    else:
        grass, soil = np.array([78.0, 112.0, 52.0]), np.array([128.0, 104.0, 72.0])
        base = grass + rng.uniform(0.0, 0.7) * (soil - grass) + rng.normal(0, 6, 3)
        spread = 22.0
    coarse = rng.normal(0.0, 1.0, (h // 16 + 2, w // 16 + 2, 1)).astype(np.float32)
    blot = np.asarray(Image.fromarray(coarse[:, :, 0]).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    tint = np.array([1.0, 1.0, 0.9]) if not snow else np.array([1.0, 1.0, 1.0])
    arr = base[None, None, :] + spread * blot[:, :, None] * tint[None, None, :]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@dataclass(frozen=True)
class Road:
    """A straight road band through ``(px, py)`` at ``angle`` degrees, ``lanes`` lanes of ``lane_width``."""

    px: float
    py: float
    angle: float
    lanes: int
    lane_width: float

    def point(self, along: float, across: float) -> np.ndarray:
        """The point ``along`` the road axis and ``across`` it (pixels, from the road centre line)."""
        t = math.radians(self.angle)
        return np.array(
            [self.px + along * math.cos(t) - across * math.sin(t), self.py + along * math.sin(t) + across * math.cos(t)]
        )

    def band(self, half_len: float, left: float, right: float) -> np.ndarray:
        """Corners of the strip from ``left`` to ``right`` across the road, ``2 * half_len`` long."""
        return np.stack(
            [
                self.point(-half_len, left),
                self.point(half_len, left),
                self.point(half_len, right),
                self.point(-half_len, right),
            ]
        )


def _roads(rng: np.random.Generator, size: tuple[int, int], scale: float) -> list[Road]:
    w, h = size
    first = Road(
        px=w * rng.uniform(0.3, 0.7),
        py=h * rng.uniform(0.3, 0.7),
        angle=float(rng.uniform(-90.0, 90.0)),
        lanes=int(rng.integers(2, 5)),
        lane_width=15.0 * scale * rng.uniform(0.95, 1.1),
    )
    roads = [first]
    if rng.random() < 0.35:
        roads.append(
            Road(
                px=w * rng.uniform(0.2, 0.8),
                py=h * rng.uniform(0.2, 0.8),
                angle=first.angle + float(rng.uniform(50.0, 130.0)),
                lanes=2,
                lane_width=first.lane_width,
            )
        )
    return roads


def _draw_roads(img: Image.Image, rng: np.random.Generator, roads: list[Road], snow: bool) -> None:
    draw = ImageDraw.Draw(img)
    half_len = float(np.hypot(*img.size))
    grey = 150 if snow else int(rng.integers(88, 112))
    for road in roads:
        half = road.lanes * road.lane_width / 2.0
        kerb = road.lane_width * 0.25
        draw.polygon(_pil(road.band(half_len, -half - kerb, half + kerb)), fill=_shade((grey,) * 3, 1.25, 10))
        draw.polygon(_pil(road.band(half_len, -half, half)), fill=(grey, grey, grey + 3))
    paint = (205, 205, 200) if snow else (228, 228, 220)
    dash = max(3.0, roads[0].lane_width * 0.5)
    for road in roads:
        half = road.lanes * road.lane_width / 2.0
        for k in range(1, road.lanes):
            across = -half + k * road.lane_width
            solid = road.lanes % 2 == 0 and k == road.lanes // 2
            line_w = max(1, round(road.lane_width / 12))
            start = -half_len + rng.uniform(0, 2 * dash)
            step = half_len * 2 if solid else 2 * dash
            along = start
            while along < half_len:
                end = half_len if solid else along + dash
                a, b = road.point(along, across), road.point(end, across)
                draw.line(_pil(np.stack([a, b])), fill=paint, width=line_w)
                along += step


def _vehicle_dims(rng: np.random.Generator, label: int, scale: float) -> tuple[float, float]:
    (l0, l1), (w0, w1) = CLASS_DIMS[label]
    return float(rng.uniform(l0, l1) * scale), float(rng.uniform(w0, w1) * scale)


def _place(rng: np.random.Generator, size: tuple[int, int], roads: list[Road], scale: float) -> list[Vehicle]:
    """Draw 3-12 vehicles, mostly in road lanes, fully inside the image and not touching each other."""
    w, h = size
    target = int(rng.integers(MIN_VEHICLES, MAX_VEHICLES + 1))
    half_len = float(np.hypot(w, h)) / 2.0
    placed: list[Vehicle] = []
    polys: list[np.ndarray] = []
    attempts = 0
    while len(placed) < target and attempts < 60 * MAX_VEHICLES:
        attempts += 1
        label = int(rng.choice(3, p=CLASS_WEIGHTS))
        length, width = _vehicle_dims(rng, label, scale)
        on_road = rng.random() < 0.85 and attempts < 40 * MAX_VEHICLES
        if on_road:
            road = roads[int(rng.integers(len(roads)))]
            lane = int(rng.integers(road.lanes))
            across = (lane - (road.lanes - 1) / 2.0) * road.lane_width + rng.normal(0.0, 0.06) * road.lane_width
            cx, cy = road.point(float(rng.uniform(-half_len, half_len)), across)
            forward = lane >= road.lanes / 2.0
            heading = road.angle + (0.0 if forward else 180.0) + float(rng.normal(0.0, 2.5))
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            heading = float(rng.uniform(-180.0, 180.0))
        vehicle = Vehicle(label, "", float(cx), float(cy), length, width, heading)
        corners = vehicle.corners()
        if corners[:, 0].min() < MARGIN or corners[:, 1].min() < MARGIN:
            continue
        if corners[:, 0].max() > w - MARGIN or corners[:, 1].max() > h - MARGIN:
            continue
        if any(_overlap(corners, other, MARGIN) for other in polys):
            continue
        colour = str(rng.choice(list(VEHICLE_COLOURS), p=COLOUR_WEIGHTS))
        placed.append(Vehicle(label, colour, vehicle.cx, vehicle.cy, length, width, heading))
        polys.append(corners)
    if len(placed) < MIN_VEHICLES:
        raise DatasetError(
            f"could place only {len(placed)} of {MIN_VEHICLES} vehicles in a {w}x{h} image; use a larger size"
        )
    return placed


def _draw_vehicles(img: Image.Image, rng: np.random.Generator, vehicles: list[Vehicle], scale: float) -> Image.Image:
    """Shadows first (blurred, multiplied in), then bodies, roofs and windows; returns the new image."""
    shadow = Image.new("L", img.size, 0)
    sdraw = ImageDraw.Draw(shadow)
    off = np.array(SHADOW_OFFSET) * scale
    for v in vehicles:
        sdraw.polygon(_pil(v.corners() + off), fill=255)
    shadow = shadow.filter(ImageFilter.GaussianBlur(radius=max(0.8, 1.6 * scale)))
    arr = np.asarray(img, dtype=np.float32) * (1.0 - 0.5 * np.asarray(shadow, dtype=np.float32)[:, :, None] / 255.0)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(out)
    for v in vehicles:
        body = np.array(VEHICLE_COLOURS[v.colour], dtype=np.float64) * rng.uniform(0.92, 1.06)
        light = float(body.mean()) < 128
        roof = _shade(body, 1.45, 28) if light else _shade(body, 0.72)
        glass = (38, 44, 52) if not v.colour == "Black" else (70, 78, 90)
        draw.polygon(_pil(v.corners()), fill=_shade(body, 1.0))
        if v.label == 0:  # car: windscreen, roof, rear window
            draw.polygon(_pil(v.part(0.55, 0.22, 0.84)), fill=glass)
            draw.polygon(_pil(v.part(0.22, -0.45, 0.80)), fill=roof)
            draw.polygon(_pil(v.part(-0.45, -0.62, 0.78)), fill=glass)
        elif v.label == 1:  # bus: front window, long roof with two roof units
            draw.polygon(_pil(v.part(0.96, 0.86, 0.86)), fill=glass)
            draw.polygon(_pil(v.part(0.84, -0.92, 0.78)), fill=roof)
            for a, b in ((0.5, 0.3), (-0.2, -0.4)):
                draw.polygon(_pil(v.part(a, b, 0.5)), fill=_shade(roof, 0.85))
        else:  # truck: cab in the body colour, lighter cargo box behind it
            cargo = _shade(np.array(VEHICLE_COLOURS["White"]), rng.uniform(0.75, 1.0))
            draw.polygon(_pil(v.part(0.92, 0.62, 0.84)), fill=roof)
            draw.polygon(_pil(v.part(0.52, -0.98, 0.96)), fill=cargo)
    return out


def _mask(size: tuple[int, int], vehicles: list[Vehicle]) -> Image.Image:
    """Instance map: pixel value k marks the k-th vehicle (1-based), pixels whose centre lies in its box."""
    w, h = size
    mask = np.zeros((h, w), dtype=np.uint8)
    for k, v in enumerate(vehicles, start=1):
        corners = v.corners()
        x0, y0 = np.floor(corners.min(axis=0)).astype(int)
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
        t = math.radians(v.heading)
        along = (xs - v.cx) * math.cos(t) + (ys - v.cy) * math.sin(t)
        across = -(xs - v.cx) * math.sin(t) + (ys - v.cy) * math.cos(t)
        inside = (np.abs(along) <= v.length / 2.0) & (np.abs(across) <= v.width / 2.0)
        mask[y0:y1, x0:x1][inside] = k
    return Image.fromarray(mask, "L")


def _box_lines(vehicles: list[Vehicle]) -> tuple[list[str], list[str], list[str]]:
    """The ``bb/``, ``rotated_bb/`` and ``attributes/`` lines; xyxy boxes are the hull of the written rbox."""
    bb, rotated, attributes = [], [], []
    for v in vehicles:
        cx, cy, w, h, angle = (round(x, 2) for x in canonical_rbox(v.cx, v.cy, v.length, v.width, v.heading))
        rotated.append(f"{v.label} {cx:.2f} {cy:.2f} {w:.2f} {h:.2f} {angle:.2f}")
        corners = rbox_corners(cx, cy, w, h, angle)
        x0, y0 = corners.min(axis=0)
        x1, y1 = corners.max(axis=0)
        bb.append(f"{v.label} {x0:.2f} {y0:.2f} {x1:.2f} {y1:.2f}")
        attributes.append(f"{v.colour} {EVD4UAV_CLASSES[v.label]}")
    return bb, rotated, attributes


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


README = """Synthetic EVD4UAV-style data set written by advbench.datasets.detection.synthetic_aerial.

Every image is procedurally drawn (roads, ground, vehicles as textured rectangles); none is a real UAV
photograph.  Use it for tests and demos only; it says nothing about detector accuracy on real imagery.
Layout and conventions: see the evd4uav loader (load_detection_dataset("evd4uav:<this folder>")).
Generated with seed={seed}, n_images={n}, size={w}x{h}, snow_fraction={snow}.
"""


def generate_aerial_dataset(
    out_dir: str | os.PathLike[str],
    *,
    n_images: int = 30,
    size: tuple[int, int] = (256, 192),
    seed: int = 0,
    snow_fraction: float = 0.2,
) -> Path:
    """Write a synthetic EVD4UAV-layout folder of ``n_images`` top-view road scenes and return its path.

    ``size`` is ``(width, height)``; images cycle through the altitudes 50m/70m/90m (shuffled), and
    ``round(snow_fraction * n_images)`` of them are snowy.  ``out_dir`` must not exist or be empty.
    The same ``seed`` gives byte-identical files.  Raises :class:`~advbench.errors.DatasetError` for
    invalid arguments.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise DatasetError(f"n_images must be a positive integer, got {n_images!r}")
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        raise DatasetError(f"size must be (width, height) in whole pixels, got {size!r}")
    width, height = size
    if min(width, height) < MIN_SIDE or max(width, height) > 4096:
        raise DatasetError(f"size {width}x{height} is out of range; both sides must lie in [{MIN_SIDE}, 4096]")
    if not 0.0 <= float(snow_fraction) <= 1.0:
        raise DatasetError(f"snow_fraction must lie in [0, 1], got {snow_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    root = Path(out_dir).expanduser()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"'{root}' already exists and is not an empty folder; choose a new or empty out_dir")
    folders = {name: root / name for name in ("images", "bb", "rotated_bb", "attributes", "masks")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)

    plan = np.random.default_rng([int(seed), 0])
    altitudes = [EVD4UAV_ALTITUDES[i % len(EVD4UAV_ALTITUDES)] for i in range(n_images)]
    altitudes = [altitudes[i] for i in plan.permutation(n_images)]
    snowy = set(plan.choice(n_images, size=round(float(snow_fraction) * n_images), replace=False).tolist())
    side_scale = min(width, height) / 192.0
    alt_lines, snow_lines, clear_lines = [], [], []
    for index in range(n_images):
        rng = np.random.default_rng([int(seed), 1, index])
        stem, altitude, snow = f"syn_{index:04d}", altitudes[index], index in snowy
        scale = ALTITUDE_SCALE[altitude] * side_scale
        roads = _roads(rng, size, scale)
        img = _ground(rng, size, snow)
        _draw_roads(img, rng, roads, snow)
        vehicles = _place(rng, size, roads, scale)
        img = _draw_vehicles(img, rng, vehicles, scale)
        noisy = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 3.5, (height, width, 3)).astype(np.float32)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").save(folders["images"] / f"{stem}.png")
        _mask(size, vehicles).save(folders["masks"] / f"{stem}.png")
        bb, rotated, attributes = _box_lines(vehicles)
        _write_lines(folders["bb"] / f"{stem}.txt", bb)
        _write_lines(folders["rotated_bb"] / f"{stem}.txt", rotated)
        _write_lines(folders["attributes"] / f"{stem}.txt", attributes)
        alt_lines.append(f"{stem} {altitude}")
        (snow_lines if snow else clear_lines).append(f"{stem}.png")
    _write_lines(root / "altitude_mapping.txt", alt_lines)
    _write_lines(root / "snow_images.txt", snow_lines)
    _write_lines(root / "non_snow_images.txt", clear_lines)
    readme = README.format(seed=seed, n=n_images, w=width, h=height, snow=snow_fraction)
    (root / "README.txt").write_text(readme, encoding="utf-8")
    return root
