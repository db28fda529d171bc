"""Multi-task dense-prediction data: :class:`MultiTaskData` and the ``load_multitask_dataset`` front door.

The data of the stealthy multi-task attack (Guo, Zhang, Li et al., arXiv 2411.17936):
images with per-pixel targets for semantic segmentation, depth and surface normals, as in NYUv2 (Silberman, Hoiem,
Kohli and Fergus, ECCV 2012).  Target formats are those of :mod:`advbench.multitask.metrics`: ``seg`` int64
``(N,H,W)`` class ids (255 = ignore), ``depth`` float ``(N,1,H,W)`` metres (0 = invalid), ``normal`` float
``(N,3,H,W)`` unit vectors in camera coordinates (x right, y down, z forward; a normal faces the camera; the zero
vector = invalid).

Specs (see :func:`load_multitask_dataset`):

* ``synthetic-multitask[:n=240,size=64,classes=4]`` -- seeded scenes rendered by ray casting (see
  :func:`generate_multitask_scenes`): a camera pitched down over a textured floor, with boxes, spheres and
  cylinders standing on it (``classes=5`` adds a back wall).  Depth is exact, normals are derived from the depth
  by finite differences (:func:`normals_from_depth`) and the image is shaded with those normals, so the three
  tasks are correlated as in NYUv2.  First 70% train, rest test.
* ``nyuv2:/path[?size=N&classes=C]`` -- folders on disk: ``rgb/`` (images), ``label/`` (PNG class ids, 255 =
  ignore), ``depth/`` (16-bit PNG in millimetres, or ``.npy`` float in metres; 0 = invalid), ``normal/`` (PNG RGB
  encoding ``n = 2 rgb / 255 - 1``; black (0,0,0) or a decoded vector shorter than 0.5 = invalid).  Files pair by
  stem.  Either ``train/`` and ``test/`` each hold those folders, or the root holds them and a seeded 70/30 split is
  made.  ``rgb/`` is required, the task folders are optional (at least one).  ``classes.txt`` in the root (one name
  a line) names the classes; else ``classes=C`` or the largest label + 1 sets their number.  ``size=N`` resizes
  everything to ``N x N`` (bilinear for images, nearest for targets); without it all images must share one size.

:func:`write_multitask_folder` writes data in that layout, so the ``nyuv2`` loader reads it back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from advbench.datasets.catalog import DATASETS
from advbench.datasets.draws import choice as _choice
from advbench.datasets.draws import uniform as _uniform
from advbench.datasets.imagefolder import IMAGE_SUFFIXES, files_by_stem, read_image
from advbench.datasets.options import parse_options, require_range
from advbench.errors import ConfigError, DatasetError, InputError, MissingPathError
from advbench.models.task_heads import IGNORE_INDEX, TASK_HEADS, check_tasks
from advbench.registry import load_from_spec, split_scheme
from advbench.spec_query import split_path_query
from advbench.task_names import MULTITASK

#: A loader: ``loader(argument, *, seed)`` where ``argument`` is the part of the spec after ``scheme:``.
MultiTaskLoader = Callable[..., "MultiTaskData"]

#: Loaders register in the one data set registry, :data:`advbench.datasets.catalog.DATASETS`, with task MULTITASK.

#: Sub-folder of each task in the nyuv2 layout, and the file suffixes it may hold.
TASK_FOLDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "seg": ("label", (".png",)),
    "depth": ("depth", (".png", ".npy")),
    "normal": ("normal", (".png",)),
}
SYNTHETIC_CLASSES = ("floor", "box", "sphere", "cylinder", "wall")
SYNTHETIC_DEFAULTS = {"n": 240, "size": 64, "classes": 4}
#: Focal length of the synthetic camera, in units of the image size (a 53-degree field of view).
SYNTHETIC_FOCAL = 1.0
TRAIN_FRACTION = 0.7


@dataclass(frozen=True, eq=False)
class MultiTaskData:
    """A multi-task data set in memory: images ``(N,3,H,W)`` float in [0,1] and per-task targets.

    ``targets_train`` / ``targets_test`` map task names (``seg``, ``depth``, ``normal``) to tensors in the formats
    of :mod:`advbench.multitask.metrics`; both splits hold the same tasks.  ``class_names`` names the segmentation
    classes (empty when there is no ``seg`` task).  Validated on construction; treat the tensors as read-only.
    """

    x_train: torch.Tensor
    targets_train: Mapping[str, torch.Tensor]
    x_test: torch.Tensor
    targets_test: Mapping[str, torch.Tensor]
    class_names: tuple[str, ...] = ()
    name: str = "multitask"
    _tasks: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        where = f"multi-task data '{self.name}'"
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        for split in ("train", "test"):
            targets = getattr(self, f"targets_{split}")
            if not isinstance(targets, Mapping) or not targets:
                raise DatasetError(f"{where}: targets_{split} must be a non-empty dict {{task: tensor}}")
        try:
            tasks = check_tasks(list(self.targets_train), what=f"{where}: targets_train")
        except ConfigError as exc:
            raise DatasetError(str(exc)) from None
        if set(self.targets_test) != set(tasks):
            raise DatasetError(f"{where}: train targets hold {', '.join(tasks)} but test targets hold "
                               f"{', '.join(self.targets_test)}; give both splits the same tasks")
        if "seg" in tasks and len(self.class_names) < 2:
            raise DatasetError(f"{where}: a 'seg' task needs class_names with at least 2 entries, got "
                               f"{list(self.class_names)}")
        size = None
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
                raise DatasetError(f"{where}: x_{split} must be a float tensor (N,3,H,W), got "
                                   f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
            if len(x) == 0:
                raise DatasetError(f"{where}: x_{split} holds no images")
            if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
                raise DatasetError(f"{where}: x_{split} must lie in [0, 1]; divide 8-bit images by 255")
            if size is not None and tuple(x.shape[2:]) != size:
                raise DatasetError(f"{where}: test images are {tuple(x.shape[2:])} but train images are {size}; "
                                   "resize both splits to one size")
            size = tuple(x.shape[2:])
            for task in tasks:
                t = getattr(self, f"targets_{split}")[task]
                if not isinstance(t, torch.Tensor) or len(t) != len(x) or tuple(t.shape[-2:]) != size:
                    raise DatasetError(f"{where}: {task} targets_{split} {tuple(getattr(t, 'shape', ()))} must hold "
                                       f"one map per image of x_{split} {tuple(x.shape)} at the same height and "
                                       "width")
                try:
                    TASK_HEADS.get(task).check_target(t, max(len(self.class_names), 1), f"{where} ({split})")
                except InputError as exc:
                    raise DatasetError(str(exc)) from None
        object.__setattr__(self, "_tasks", tasks)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks with targets, in canonical order (``seg``, ``depth``, ``normal``)."""
        return self._tasks

    @property
    def num_classes(self) -> int:
        """Number of segmentation classes (0 without a ``seg`` task and class names)."""
        return len(self.class_names)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of every image and target."""
        h, w = self.x_train.shape[2:]
        return int(h), int(w)

    def __len__(self) -> int:
        return len(self.x_train) + len(self.x_test)


# --------------------------------------------------------------------------------------------------- spec front door

def parse_multitask_spec(spec: str) -> tuple[str, str]:
    """``"nyuv2:/data?size=64"`` -> ``("nyuv2", "/data?size=64")``; the scheme must be registered."""
    return split_scheme(spec, DATASETS, "'synthetic-multitask:n=240' or 'nyuv2:/path/to/nyuv2'", MULTITASK)


def load_multitask_dataset(spec: str, *, seed: int = 0) -> MultiTaskData:
    """Load the multi-task data set described by ``spec`` (see the module doc for the schemes).

    ``seed`` fixes every random choice (synthetic scenes, the split of a folder without ``train/`` and
    ``test/``); the same spec and seed give identical tensors.  Unknown schemes raise
    :class:`~advbench.errors.UnknownNameError`, missing folders :class:`~advbench.errors.MissingPathError`, bad
    files and options :class:`~advbench.errors.DatasetError`.
    """
    return load_from_spec(spec, DATASETS, "'synthetic-multitask:n=240' or 'nyuv2:/path/to/nyuv2'", seed=seed,
                          task=MULTITASK)


# --------------------------------------------------------------------------------------------------- geometry

def _rays(size: int, focal: float) -> torch.Tensor:
    """Camera rays ``(3, H, W)`` through pixel centres, ``(u / f, v / f, 1)`` around the image centre."""
    coords = (torch.arange(size, dtype=torch.float64) + 0.5 - size / 2) / focal
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([u, v, torch.ones_like(u)])


def normals_from_depth(depth: torch.Tensor, *, focal: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Unit surface normals ``(N,3,H,W)`` of a depth map ``(N,1,H,W)`` (metres along the optical axis).

    Every pixel is back-projected to ``P = Z (u / f, v / f, 1)`` (pinhole camera, principal point at the image
    centre, ``focal`` in pixels); the normal is the cross product of the finite differences of ``P`` along the
    image rows and columns (central inside, one-sided at the border), normalised and turned to face the camera
    (``n . P < 0``).  Pixels outside ``valid`` (bool ``(N,H,W)``), or with depth <= 0, get the zero vector.
    """
    if not isinstance(depth, torch.Tensor) or depth.dim() != 4 or depth.shape[1] != 1:
        raise InputError(f"normals_from_depth: depth must be (N,1,H,W), got {tuple(getattr(depth, 'shape', ()))}")
    if not isinstance(focal, (int, float)) or not focal > 0:
        raise ConfigError(f"normals_from_depth: focal must be a positive number of pixels, got {focal!r}")
    h, w = depth.shape[2:]
    if h < 2 or w < 2:
        raise InputError(f"normals_from_depth: depth must be at least 2x2, got {h}x{w}")
    ys = (torch.arange(h, dtype=torch.float64) + 0.5 - h / 2) / focal
    xs = (torch.arange(w, dtype=torch.float64) + 0.5 - w / 2) / focal
    rays = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w), torch.ones(h, w, dtype=torch.float64)])
    points = depth.double() * rays  # (N,3,H,W)
    d_row, d_col = torch.gradient(points, dim=(2, 3))
    normal = torch.linalg.cross(d_col, d_row, dim=1)
    facing = (normal * points).sum(1, keepdim=True)
    normal = torch.where(facing > 0, -normal, normal)
    normal = F.normalize(normal, dim=1, eps=1e-12)
    ok = depth[:, 0] > 0
    if valid is not None:
        ok = ok & valid
    return torch.where(ok.unsqueeze(1), normal, torch.zeros_like(normal)).to(torch.float32)


# --------------------------------------------------------------------------------------------------- synthetic scenes

_PALETTE = {  # base RGB of each class
    "box": (0.78, 0.32, 0.24),
    "sphere": (0.30, 0.70, 0.34),
    "cylinder": (0.28, 0.40, 0.82),
    "wall": (0.82, 0.76, 0.62),
}
_LIGHT = torch.tensor([-0.4, -0.8, -0.45], dtype=torch.float64)  # towards the light, camera coordinates
_NO_HIT = math.inf


def _hit_sphere(d: torch.Tensor, centre: torch.Tensor, radius: float) -> torch.Tensor:
    """Ray parameter of the nearest hit of rays ``d`` (3,H,W) from the origin with a sphere (inf for a miss)."""
    a = (d * d).sum(0)
    b = (d * centre.view(3, 1, 1)).sum(0)
    c = float(centre @ centre) - radius**2
    disc = b * b - a * c
    t = (b - disc.clamp(min=0).sqrt()) / a
    return torch.where((disc >= 0) & (t > 0), t, torch.full_like(t, _NO_HIT))


def _hit_cylinder(d: torch.Tensor, base: torch.Tensor, radius: float, height: float) -> torch.Tensor:
    """Nearest hit with an upright cylinder standing at ``base`` (its bottom centre; y points down)."""
    dx, dy, dz = d
    cx, floor_y, cz = (float(v) for v in base)
    a = dx * dx + dz * dz
    b = dx * cx + dz * cz
    c = cx * cx + cz * cz - radius**2
    disc = b * b - a * c
    side = (b - disc.clamp(min=0).sqrt()) / a.clamp(min=1e-12)
    y = side * dy
    side_ok = (disc >= 0) & (side > 0) & (y >= floor_y - height) & (y <= floor_y)
    top_y = floor_y - height
    cap = top_y / torch.where(dy.abs() > 1e-12, dy, torch.full_like(dy, 1e-12))
    cap_ok = (cap > 0) & ((cap * dx - cx) ** 2 + (cap * dz - cz) ** 2 <= radius**2)
    inf = torch.full_like(side, _NO_HIT)
    return torch.minimum(torch.where(side_ok, side, inf), torch.where(cap_ok, cap, inf))


def _hit_box(d: torch.Tensor, centre: torch.Tensor, half: torch.Tensor, yaw: float) -> torch.Tensor:
    """Nearest hit with a box of half-sizes ``half`` at ``centre``, turned by ``yaw`` about the vertical (slabs)."""
    cos, sin = math.cos(yaw), math.sin(yaw)
    rot = torch.tensor([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]], dtype=torch.float64)
    origin = rot @ (-centre)
    direction = torch.einsum("ij,jhw->ihw", rot, d)
    direction = torch.where(direction.abs() < 1e-12, torch.full_like(direction, 1e-12), direction)
    t1 = (-half.view(3, 1, 1) - origin.view(3, 1, 1)) / direction
    t2 = (half.view(3, 1, 1) - origin.view(3, 1, 1)) / direction
    near = torch.minimum(t1, t2).amax(0)
    far = torch.maximum(t1, t2).amin(0)
    return torch.where((near <= far) & (near > 0), near, torch.full_like(near, _NO_HIT))


def _boundaries(surface: torch.Tensor) -> torch.Tensor:
    """Pixels ``(H,W)`` whose surface id differs from a 4-neighbour's (depth discontinuities and creases)."""
    edge = torch.zeros_like(surface, dtype=torch.bool)
    vertical = surface[1:] != surface[:-1]
    horizontal = surface[:, 1:] != surface[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def generate_multitask_scenes(n: int, size: int, *, classes: int = 4,
                              seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple[str, ...]]:
    """``n`` ray-cast scenes: images ``(n,3,size,size)`` in [0,1], targets ``{seg, depth, normal}`` and class names.

    A pinhole camera (focal ``SYNTHETIC_FOCAL * size`` pixels) 1.2-1.8 m above a floor is pitched down by 40-55
    degrees, so the floor fills the view as a tilted plane whose depth grows towards the top of the image.  1-4
    objects stand on the floor: boxes (turned about the vertical), spheres and upright cylinders -- the first
    ``classes - 1`` of those kinds; ``classes=5`` adds a back wall.  Classes are ``SYNTHETIC_CLASSES[:classes]``.
    Depth is the exact distance along the optical axis; normals come from it by :func:`normals_from_depth` and
    are zero (invalid) on the pixels where the surface changes.  The image is the class colour (floor: a
    checkerboard in world coordinates), Lambert-shaded with those normals, dimmed with distance, plus noise; all
    randomness comes from one ``torch.Generator`` seeded with ``seed``.
    """
    if not 2 <= classes <= len(SYNTHETIC_CLASSES):
        raise ConfigError(f"generate_multitask_scenes: classes must be between 2 and {len(SYNTHETIC_CLASSES)}, "
                          f"got {classes}")
    gen = torch.Generator().manual_seed(seed)
    focal = SYNTHETIC_FOCAL * size
    rays = _rays(size, focal)
    kinds = SYNTHETIC_CLASSES[1:min(classes, 4)]
    light = F.normalize(_LIGHT, dim=0).view(3, 1, 1)
    images = torch.empty(n, 3, size, size)
    seg = torch.empty(n, size, size, dtype=torch.int64)
    depth = torch.empty(n, 1, size, size)
    normal = torch.empty(n, 3, size, size)
    for i in range(n):
        pitch = math.radians(_uniform(gen, 40, 55))
        height = _uniform(gen, 1.2, 1.8)
        cos, sin = math.cos(pitch), math.sin(pitch)
        # camera -> world (y down, z forward and horizontal): the camera looks down by `pitch`
        d = torch.stack([rays[0], rays[1] * cos + sin, -rays[1] * sin + cos])
        t = height / d[1]
        surface = torch.zeros(size, size, dtype=torch.int64)
        surface_class = [0]
        colours = [torch.tensor([_uniform(gen, 0.35, 0.65) for _ in range(3)], dtype=torch.float64)]
        if classes >= 5:  # a back wall somewhat before the farthest visible floor
            far = float((t * d[2]).max())
            wall = _uniform(gen, 0.55, 0.9) * far / d[2]
            surface = torch.where(wall < t, 1, surface)
            t = torch.minimum(wall, t)
            surface_class.append(4)
            colours.append(torch.tensor(_PALETTE["wall"], dtype=torch.float64))
        for _ in range(1 + _choice(gen, 4)):
            kind = kinds[_choice(gen, len(kinds))]
            row, col = int(_uniform(gen, 0.4, 0.95) * size), int(_uniform(gen, 0.1, 0.9) * size)
            ground = d[:, row, col] * (height / d[1, row, col])  # where that pixel's ray meets the floor
            if kind == "sphere":
                radius = _uniform(gen, 0.15, 0.4)
                hit = _hit_sphere(d, ground - torch.tensor([0.0, radius, 0.0], dtype=torch.float64), radius)
            elif kind == "cylinder":
                hit = _hit_cylinder(d, ground, _uniform(gen, 0.12, 0.3), _uniform(gen, 0.3, 1.0))
            else:
                half = torch.tensor([_uniform(gen, 0.15, 0.4), _uniform(gen, 0.15, 0.5), _uniform(gen, 0.15, 0.4)],
                                    dtype=torch.float64)
                centre = ground - torch.tensor([0.0, float(half[1]), 0.0], dtype=torch.float64)
                hit = _hit_box(d, centre, half, _uniform(gen, 0, math.pi))
            closer = hit < t
            surface = torch.where(closer, len(surface_class), surface)
            t = torch.where(closer, hit, t)
            surface_class.append(SYNTHETIC_CLASSES.index(kind))
            jitter = torch.tensor([_uniform(gen, -0.08, 0.08) for _ in range(3)], dtype=torch.float64)
            colours.append((torch.tensor(_PALETTE[kind], dtype=torch.float64) + jitter).clamp(0, 1))
        z = t.float()[None, None]
        n_map = normals_from_depth(z, focal=focal, valid=~_boundaries(surface)[None])[0]
        albedo = torch.stack(colours)[surface].permute(2, 0, 1)  # (3,H,W)
        world = d * t  # checkerboard of 0.5 m squares on the floor
        checker = ((world[0] / 0.5).floor() + (world[2] / 0.5).floor()).remainder(2)
        albedo = torch.where((surface == 0) & (checker > 0), albedo * 0.72, albedo)
        shade = 0.45 + 0.55 * (n_map.double() * light).sum(0).clamp(min=0)
        img = albedo * shade * torch.exp(-0.06 * t)
        img = img + 0.01 * torch.randn(img.shape, generator=gen, dtype=torch.float64)
        images[i] = img.clamp(0, 1).float()
        seg[i] = torch.tensor(surface_class)[surface]
        depth[i] = z[0]
        normal[i] = n_map
    return images, {"seg": seg, "depth": depth, "normal": normal}, SYNTHETIC_CLASSES[:classes]


def load_synthetic_multitask(arg: str, *, seed: int = 0) -> MultiTaskData:
    """``synthetic-multitask[:n=240,size=64,classes=4]``: :func:`generate_multitask_scenes`, first 70% train."""
    where = f"synthetic-multitask:{arg}" if arg else "synthetic-multitask"
    opts = {**SYNTHETIC_DEFAULTS, **parse_options(arg, {"n": int, "size": int, "classes": int}, where=where)}
    n = require_range(where, "n", opts["n"], 2, 100_000)
    size = require_range(where, "size", opts["size"], 8, 1024)
    classes = require_range(where, "classes", opts["classes"], 2, len(SYNTHETIC_CLASSES))
    if n * size * size > 30_000_000:
        raise DatasetError(f"{where}: n={n} at size={size} would need more than ~1 GB; lower n or size")
    x, targets, names = generate_multitask_scenes(n, size, classes=classes, seed=seed)
    n_train = min(n - 1, max(1, round(TRAIN_FRACTION * n)))
    return MultiTaskData(x[:n_train], {k: v[:n_train] for k, v in targets.items()}, x[n_train:],
                         {k: v[n_train:] for k, v in targets.items()}, class_names=names, name=where)


DATASETS.add("synthetic-multitask", load_synthetic_multitask, task=MULTITASK)


# --------------------------------------------------------------------------------------------------- nyuv2 folders

def _read_rgb(path: Path) -> Image.Image:
    return read_image(path).convert("RGB")


def _read_label(path: Path) -> np.ndarray:
    img = read_image(path)
    if img.mode in ("L", "P"):
        return np.asarray(img, dtype=np.uint8).astype(np.int64)
    if img.mode.startswith("I"):
        values = np.asarray(img).astype(np.int64)
        if values.min() < 0 or values.max() > 255:
            raise DatasetError(f"label '{path}' holds values outside 0..255 (found {values.min()}..{values.max()}); "
                               "class ids must be 0..254 with 255 for unlabelled pixels")
        return values
    raise DatasetError(f"label '{path}' has image mode {img.mode}; labels must be single-channel PNGs of class ids "
                       "(mode L or P, 255 = ignore), not colour-coded; map the colours to ids first")


def _read_depth(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read depth file '{path}' ({exc}); save a float array with np.save") from exc
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
            raise DatasetError(f"depth file '{path}' holds a {arr.dtype} array of shape {arr.shape}; expected a "
                               "float (H, W) array in metres")
        metres = arr.astype(np.float32)
    else:
        img = read_image(path)
        if not img.mode.startswith("I"):
            raise DatasetError(f"depth PNG '{path}' is {img.mode} (8-bit); depth PNGs must be 16-bit in millimetres "
                               "(PIL: Image.fromarray(depth_mm.astype(np.uint16))), or save metres as .npy")
        metres = np.asarray(img).astype(np.float32) / 1000.0
    if not np.isfinite(metres).all() or metres.min() < 0:
        raise DatasetError(f"depth file '{path}' holds NaN, inf or negative values; use 0 for invalid pixels")
    return metres


def _read_normal(path: Path) -> np.ndarray:
    img = read_image(path)
    if img.mode != "RGB":
        raise DatasetError(f"normal PNG '{path}' has image mode {img.mode}; normals must be 8-bit RGB encoding "
                           "n = 2 rgb / 255 - 1 (black = invalid)")
    rgb = np.asarray(img, dtype=np.float32)
    vec = 2.0 * rgb / 255.0 - 1.0
    length = np.linalg.norm(vec, axis=2, keepdims=True)
    invalid = (rgb.sum(axis=2, keepdims=True) == 0) | (length < 0.5)
    unit = np.where(invalid, 0.0, vec / np.maximum(length, 1e-6))
    return unit.transpose(2, 0, 1).astype(np.float32)


def _split_layout(root: Path) -> dict[str, Path] | None:
    """``{"train": root/train, "test": root/test}`` when the root is split, ``None`` when it holds rgb/ itself."""
    split_dirs = {s: root / s for s in ("train", "test")}
    present = {s: p.is_dir() for s, p in split_dirs.items()}
    if any(present.values()):
        missing = [str(p) for s, p in split_dirs.items() if not present[s]]
        if missing:
            raise MissingPathError(f"nyuv2 folder '{root}' has {'train' if present['train'] else 'test'}/ but not "
                                   f"'{missing[0]}'; give both train/ and test/, or neither (then the root holds "
                                   "rgb/, label/, depth/, normal/ and a seeded 70/30 split is made)")
        return split_dirs
    return None


def _scan(folder: Path) -> tuple[list[str], dict[str, dict[str, Path]], dict[str, Path]]:
    """Stems, per-task files by stem and rgb files by stem of one split folder."""
    rgb_dir = folder / "rgb"
    if not rgb_dir.is_dir():
        raise MissingPathError(f"'{rgb_dir}' not found; a nyuv2 folder holds rgb/ plus at least one of "
                               f"{', '.join(f + '/' for f, _ in TASK_FOLDERS.values())}")
    rgb = files_by_stem(rgb_dir, IMAGE_SUFFIXES, "pairing with the rgb image")
    if not rgb:
        raise DatasetError(f"'{rgb_dir}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    per_task: dict[str, dict[str, Path]] = {}
    for task, (sub, suffixes) in TASK_FOLDERS.items():
        task_dir = folder / sub
        if not task_dir.is_dir():
            continue
        files = files_by_stem(task_dir, suffixes, "pairing with the rgb image")
        lonely = sorted(set(rgb) - set(files))
        if lonely:
            raise DatasetError(f"rgb image '{rgb[lonely[0]]}' has no {sub} file in '{task_dir}' "
                               f"({len(lonely)} image(s) lack one); add '{lonely[0]}{suffixes[0]}' "
                               f"({' or '.join(suffixes)}) or remove the image")
        extra = sorted(set(files) - set(rgb))
        if extra:
            raise DatasetError(f"{sub} file '{files[extra[0]]}' has no rgb image in '{rgb_dir}' ({len(extra)} "
                               "file(s) without one); add the image with the same stem or remove the file")
        per_task[task] = files
    if not per_task:
        raise DatasetError(f"'{folder}' has rgb/ but none of the task folders "
                           f"{', '.join(f + '/' for f, _ in TASK_FOLDERS.values())}; add at least one")
    return sorted(rgb), per_task, rgb


def _read_folder(folder: Path, size: int | None) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[Path]]:
    stems, per_task, rgb_files = _scan(folder)
    images: list[np.ndarray] = []
    targets: dict[str, list[np.ndarray]] = {t: [] for t in per_task}
    for stem in stems:
        img = _read_rgb(rgb_files[stem])
        w, h = img.size
        maps = {}
        for task, files in per_task.items():
            path = files[stem]
            value = {"seg": _read_label, "depth": _read_depth, "normal": _read_normal}[task](path)
            mh, mw = value.shape[-2:]
            if (mh, mw) != (h, w):
                raise DatasetError(f"{task} file '{path}' is {mw}x{mh} but its image '{rgb_files[stem]}' is {w}x{h} "
                                   "(width x height); every target must have its image's size")
            maps[task] = value
        if size is not None and (w, h) != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
            for task, value in maps.items():
                t = torch.from_numpy(np.ascontiguousarray(value)).double()
                t = t.view(1, 1, h, w) if t.dim() == 2 else t.unsqueeze(0)
                maps[task] = F.interpolate(t, size=(size, size), mode="nearest")[0].numpy()
                if task == "seg":
                    maps[task] = maps[task][0]
        elif images and images[0].shape[1:] != (h, w):
            first = rgb_files[stems[0]]
            raise DatasetError(f"image '{rgb_files[stem]}' is {w}x{h} but '{first}' is {images[0].shape[2]}x"
                               f"{images[0].shape[1]}; add '?size=N' to the nyuv2 spec to resize all to N x N")
        images.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
        for task, value in maps.items():
            targets[task].append(value)
    x = torch.from_numpy(np.stack(images)).float().div_(255.0)
    out = {
        task: (torch.from_numpy(np.stack(values)).long() if task == "seg"
               else torch.from_numpy(np.stack(values)).float().reshape(len(values), -1, *x.shape[2:]))
        for task, values in targets.items()
    }
    paths = [per_task["seg"][s] for s in stems] if "seg" in per_task else []
    return x, out, paths


def _class_names(root: Path, classes: int | None, labels: list[tuple[torch.Tensor, list[Path]]]) -> tuple[str, ...]:
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if classes is not None and classes != len(names):
            raise DatasetError(f"'{names_file}' names {len(names)} classes but the spec says classes={classes}; "
                               "drop one of the two")
        if len(names) < 2:
            raise DatasetError(f"'{names_file}' must name at least 2 classes, one a line")
    elif classes is not None:
        names = [f"class{i}" for i in range(classes)]
    else:
        top = max((int(seg[seg != IGNORE_INDEX].max()) for seg, _ in labels if bool((seg != IGNORE_INDEX).any())),
                  default=0)
        names = [f"class{i}" for i in range(max(top + 1, 2))]
    for seg, paths in labels:
        bad = ((seg != IGNORE_INDEX) & (seg >= len(names))).flatten(1).any(1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            value = int(seg[i][(seg[i] != IGNORE_INDEX) & (seg[i] >= len(names))][0])
            source = f"'{names_file}'" if names_file.is_file() else f"classes={len(names)}"
            raise DatasetError(f"label '{paths[i]}' holds class id {value} but {source} allows only 0.."
                               f"{len(names) - 1} (and 255 = ignore); fix the label or the class list")
    return tuple(names)


def load_nyuv2(arg: str, *, seed: int = 0) -> MultiTaskData:
    """``nyuv2:/path[?size=N&classes=C]``: read a NYUv2-style folder (see the module doc)."""
    path, query = split_path_query(arg)
    if not path.strip():
        raise DatasetError("the nyuv2 spec needs a folder: 'nyuv2:/path/to/nyuv2[?size=64]'")
    where = f"nyuv2:{arg}"
    opts = parse_options(query, {"size": int, "classes": int}, where=where)
    size = require_range(where, "size", opts["size"], 8, 4096) if "size" in opts else None
    classes = require_range(where, "classes", opts["classes"], 2, 255) if "classes" in opts else None
    root = Path(path.strip()).expanduser()
    if not root.is_dir():
        raise MissingPathError(f"nyuv2 folder not found: '{root}'; pass a folder holding rgb/, label/, depth/, "
                               "normal/ (or train/ and test/ with those inside)")
    split_dirs = _split_layout(root)
    if split_dirs is not None:
        x_train, t_train, p_train = _read_folder(split_dirs["train"], size)
        x_test, t_test, p_test = _read_folder(split_dirs["test"], size)
        if set(t_train) != set(t_test):
            raise DatasetError(f"'{split_dirs['train']}' has targets for {', '.join(t_train)} but "
                               f"'{split_dirs['test']}' for {', '.join(t_test)}; give both splits the same folders")
    else:
        x, targets, paths = _read_folder(root, size)
        if len(x) < 2:
            raise DatasetError(f"'{root / 'rgb'}' holds one image; a seeded train/test split needs at least 2")
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        n_train = min(len(x) - 1, max(1, round(TRAIN_FRACTION * len(x))))
        tr, te = order[:n_train], order[n_train:]
        x_train, x_test = x[tr], x[te]
        t_train = {k: v[tr] for k, v in targets.items()}
        t_test = {k: v[te] for k, v in targets.items()}
        p_train = [paths[i] for i in tr.tolist()] if paths else []
        p_test = [paths[i] for i in te.tolist()] if paths else []
    if "seg" in t_train:
        names = _class_names(root, classes, [(t_train["seg"], p_train), (t_test["seg"], p_test)])
    else:
        names = ()
    if x_train.shape[2:] != x_test.shape[2:]:
        raise DatasetError(f"{where}: train images are {tuple(x_train.shape[2:])} but test images are "
                           f"{tuple(x_test.shape[2:])}; add '?size=N' to resize all to N x N")
    return MultiTaskData(x_train, t_train, x_test, t_test, class_names=names, name=where)


DATASETS.add("nyuv2", load_nyuv2, task=MULTITASK)


def write_multitask_folder(data: MultiTaskData, out_dir: str | Path, *, layout: str = "split",
                           depth_format: str = "png", overwrite: bool = False) -> Path:
    """Write ``data`` as PNG (and .npy) files in the nyuv2 layout under ``out_dir``; returns ``out_dir``.

    ``layout='split'`` writes ``train/`` and ``test/`` (each with ``rgb/`` and a folder per task), so the loader
    gives back the same split; ``layout='flat'`` writes all images (train first) into the root, which the loader
    splits by seed.  Files are ``0000.png``, ``0001.png``, ...; images 8-bit RGB, labels 8-bit ids, depth 16-bit
    millimetres (``depth_format='png'``, at most 65.535 m) or float32 metres (``'npy'``), normals RGB with black for
    invalid pixels; ``classes.txt`` holds the class names.  ``nyuv2:OUT_DIR`` reads it back: images to within
    1/510, labels exactly, depth to within 0.5 mm (exactly as .npy), normals to within about 0.5 degrees.
    """
    if not isinstance(data, MultiTaskData):
        raise ConfigError(f"write_multitask_folder: data must be a MultiTaskData, got {type(data).__name__}")
    if layout not in ("split", "flat"):
        raise ConfigError(f"write_multitask_folder: layout must be 'split' or 'flat', got {layout!r}")
    if depth_format not in ("png", "npy"):
        raise ConfigError(f"write_multitask_folder: depth_format must be 'png' or 'npy', got {depth_format!r}")
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"write_multitask_folder: '{out_dir}' already holds files; choose an empty out_dir or "
                          "pass overwrite=True")
    if "depth" in data.tasks and depth_format == "png":
        deepest = max(float(data.targets_train["depth"].max()), float(data.targets_test["depth"].max()))
        if deepest > 65.535:
            raise ConfigError(f"write_multitask_folder: depth reaches {deepest:.1f} m, beyond 16-bit millimetres "
                              "(65.535 m); pass depth_format='npy'")
    splits = [(data.x_train, data.targets_train), (data.x_test, data.targets_test)]
    if layout == "split":
        jobs = [(out_dir / "train", *splits[0], 0), (out_dir / "test", *splits[1], 0)]
    else:
        jobs = [(out_dir, *splits[0], 0), (out_dir, *splits[1], len(data.x_train))]
    width = max(4, len(str(len(data))))
    for folder, x, targets, offset in jobs:
        (folder / "rgb").mkdir(parents=True, exist_ok=True)
        for task in data.tasks:
            (folder / TASK_FOLDERS[task][0]).mkdir(parents=True, exist_ok=True)
        pixels = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i in range(len(x)):
            stem = f"{offset + i:0{width}d}"
            Image.fromarray(pixels[i], mode="RGB").save(folder / "rgb" / f"{stem}.png")
            if "seg" in targets:
                Image.fromarray(targets["seg"][i].cpu().numpy().astype(np.uint8), mode="L").save(
                    folder / "label" / f"{stem}.png")
            if "depth" in targets:
                metres = targets["depth"][i, 0].detach().cpu().numpy().astype(np.float32)
                if depth_format == "npy":
                    np.save(folder / "depth" / f"{stem}.npy", metres)
                else:
                    Image.fromarray(np.round(metres * 1000).astype(np.uint16)).save(folder / "depth" / f"{stem}.png")
            if "normal" in targets:
                n = targets["normal"][i].detach().cpu()
                invalid = (n.abs().sum(0) == 0).numpy()
                rgb = ((n + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                rgb[invalid] = 0
                Image.fromarray(rgb, mode="RGB").save(folder / "normal" / f"{stem}.png")
    if data.class_names:
        (out_dir / "classes.txt").write_text("\n".join(data.class_names) + "\n")
    return out_dir
