"""Salient-object-detection (SOD) data: the :class:`SODData` container and the ``load_sod_dataset`` front door.

Specs (see :func:`load_sod_dataset`):

* ``eorssd:/path[?size=N&threshold=T]`` -- image/mask folders on disk in the layout of EORSSD (Zhang et al.,
  "Dense Attention Fluid Network for Salient Object Detection in Optical Remote Sensing Images", IEEE TIP
  2021; 1,400 train / 600 test images), either ``train/images`` + ``train/masks`` + ``test/images`` +
  ``test/masks`` or the release names ``train-images`` + ``train-labels`` + ``test-images`` + ``test-labels``.
  An image and its mask share a file stem.  Everything is resized to ``N x N`` (default 128): bilinear for
  images, nearest for masks.  Masks must be binary (0 and 255, or 0 and 1); ``threshold=T`` binarises grey
  masks as ``value >= T`` instead.
* ``synthetic-sod[:n=200,size=64]`` -- seeded top-view scenes in the spirit of optical remote sensing
  (terrain or water, fields, roads, shadows) with 1-3 salient ships, buildings or planes; split 70/30.

:func:`write_sod_folder` writes data in the EORSSD layout as PNG files, so the ``eorssd`` loader reads it back.
The cloud-attack work this feeds is Sun, Fu, Li et al., "Adversarial cloud attack and DefenseNet"
(arXiv 2306.17431).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from advbench.errors import ConfigError, DatasetError, MissingPathError
from advbench.registry import load_from_spec, split_scheme
from advbench.spec_query import split_path_query
from advbench.task_names import SOD

#: A loader: ``loader(argument, *, seed)`` where ``argument`` is the part of the spec after ``scheme:``.
SODLoader = Callable[..., "SODData"]

#: Loaders register in the one data set registry, :data:`advbench.datasets.catalog.DATASETS`, with task SOD.

#: The two accepted folder layouts, as (train images, train masks, test images, test masks).
LAYOUTS: dict[str, tuple[str, str, str, str]] = {
    "eorssd": ("train-images", "train-labels", "test-images", "test-labels"),
    "split-folders": ("train/images", "train/masks", "test/images", "test/masks"),
}
DEFAULT_SIZE = 128
SYNTHETIC_DEFAULTS = {"n": 200, "size": 64}
TRAIN_FRACTION = 0.7


@dataclass(frozen=True, eq=False)
class SODData:
    """An SOD data set in memory: images ``(N,3,H,W)`` float in [0,1] and masks ``(N,1,H,W)`` float in {0,1}.

    Validated on construction.  Treat the tensors as read-only (copy before changing them in place).
    """

    x_train: torch.Tensor
    m_train: torch.Tensor
    x_test: torch.Tensor
    m_test: torch.Tensor
    name: str = "sod"

    def __post_init__(self) -> None:
        size = None
        for split in ("train", "test"):
            x, m = getattr(self, f"x_{split}"), getattr(self, f"m_{split}")
            _check_pair(self.name, split, x, m)
            if size is not None and tuple(x.shape[2:]) != size:
                raise DatasetError(f"SOD data '{self.name}': test images are {tuple(x.shape[2:])} but train images "
                                   f"are {size}; resize both splits to one size")
            size = tuple(x.shape[2:])

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of every image and mask."""
        h, w = self.x_train.shape[2:]
        return int(h), int(w)

    def __len__(self) -> int:
        return len(self.x_train) + len(self.x_test)


def _check_pair(name: str, split: str, x: torch.Tensor, m: torch.Tensor) -> None:
    where = f"SOD data '{name}'"
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise DatasetError(f"{where}: x_{split} must be a float tensor (N,3,H,W), got "
                           f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    if not isinstance(m, torch.Tensor) or m.dim() != 4 or m.shape[1] != 1 or not m.is_floating_point():
        raise DatasetError(f"{where}: m_{split} must be a float tensor (N,1,H,W), got "
                           f"{getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))}")
    if len(x) == 0 or len(x) != len(m) or x.shape[2:] != m.shape[2:]:
        raise DatasetError(f"{where}: x_{split} {tuple(x.shape)} and m_{split} {tuple(m.shape)} must hold the same "
                           "non-zero number of images of the same height and width")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise DatasetError(f"{where}: x_{split} must lie in [0, 1]; divide 8-bit images by 255")
    if not bool(((m == 0) | (m == 1)).all()):
        raise DatasetError(f"{where}: m_{split} must hold only 0 and 1; threshold the masks, e.g. (m > 0.5).float()")


# --------------------------------------------------------------------------------------------------- spec front door

def parse_sod_spec(spec: str) -> tuple[str, str]:
    """``"eorssd:/data?size=64"`` -> ``("eorssd", "/data?size=64")``; the scheme must be registered."""
    return split_scheme(spec, DATASETS, "'synthetic-sod:n=200' or 'eorssd:/path/to/EORSSD'", SOD)


def load_sod_dataset(spec: str, *, seed: int = 0) -> SODData:
    """Load the SOD data set described by ``spec`` (see the module doc for the schemes).

    ``seed`` fixes every random choice (the synthetic scenes); the same spec and seed give identical tensors.
    Unknown schemes raise :class:`~advbench.errors.UnknownNameError`; missing folders raise
    :class:`~advbench.errors.MissingPathError`; bad files and options raise :class:`~advbench.errors.DatasetError`.
    """
    return load_from_spec(spec, DATASETS, "'synthetic-sod:n=200' or 'eorssd:/path/to/EORSSD'", seed=seed, task=SOD)


# --------------------------------------------------------------------------------------------------- eorssd folders

def _resolve_layout(root: Path) -> tuple[Path, Path, Path, Path]:
    if not root.is_dir():
        raise MissingPathError(f"EORSSD folder not found: '{root}'; pass the folder that holds train-images/, "
                               "train-labels/, test-images/ and test-labels/ (or train/images, train/masks, ...)")
    for names in LAYOUTS.values():
        dirs = tuple(root / n for n in names)
        present = [d.is_dir() for d in dirs]
        if all(present):
            return dirs  # type: ignore[return-value]
        if any(present):
            missing = ", ".join(f"'{d}'" for d, ok in zip(dirs, present, strict=True) if not ok)
            raise MissingPathError(f"EORSSD folder '{root}' is incomplete: {missing} is missing; an SOD data set "
                                   f"needs all of {', '.join(names)}")
    expected = " or ".join(" + ".join(names) for names in LAYOUTS.values())
    raise MissingPathError(f"'{root}' has none of the EORSSD sub-folders; expected {expected}")


def _pair_files(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    images = files_by_stem(image_dir, IMAGE_SUFFIXES, "image/mask pairing")
    masks = files_by_stem(mask_dir, IMAGE_SUFFIXES, "image/mask pairing")
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images:
        shown = ", ".join(f"'{images[s]}'" for s in lonely_images[:3])
        raise DatasetError(f"{len(lonely_images)} image(s) in '{image_dir}' have no mask in '{mask_dir}' (e.g. "
                           f"{shown}); add a mask with the same file stem or remove the image")
    if lonely_masks:
        shown = ", ".join(f"'{masks[s]}'" for s in lonely_masks[:3])
        raise DatasetError(f"{len(lonely_masks)} mask(s) in '{mask_dir}' have no image in '{image_dir}' (e.g. "
                           f"{shown}); add the image with the same file stem or remove the mask")
    if not images:
        raise DatasetError(f"'{image_dir}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); add image/mask "
                           "pairs")
    return [(images[s], masks[s]) for s in sorted(images)]


def _mask_array(img: Image.Image, path: Path, threshold: int | None) -> np.ndarray:
    """Binary uint8 {0, 255} mask from a PIL image, checking that it is binary unless ``threshold`` is set."""
    grey = np.asarray(img.convert("L"), dtype=np.uint8)
    if threshold is not None:
        return np.where(grey >= threshold, 255, 0).astype(np.uint8)
    values = np.unique(grey)
    if set(values.tolist()) <= {0, 255}:
        return grey
    if set(values.tolist()) <= {0, 1}:
        return grey * np.uint8(255)
    shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise DatasetError(f"mask '{path}' is not binary: it holds the values {shown} (expected only 0 and 255, or 0 "
                       "and 1). Threshold it (e.g. PIL: img.convert('L').point(lambda v: 255 if v >= 128 else 0)) "
                       "and save it as PNG, or add '?threshold=128' to the eorssd spec")


def _read_split(image_dir: Path, mask_dir: Path, size: int, threshold: int | None) -> tuple[torch.Tensor, ...]:
    images, masks = [], []
    for image_path, mask_path in _pair_files(image_dir, mask_dir):
        img, mask = read_image(image_path), read_image(mask_path)
        if img.size != mask.size:
            raise DatasetError(f"image '{image_path}' is {img.size[0]}x{img.size[1]} but its mask '{mask_path}' is "
                               f"{mask.size[0]}x{mask.size[1]} (width x height); a mask must have its image's size")
        binary = Image.fromarray(_mask_array(mask, mask_path, threshold))
        rgb = img.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            binary = binary.resize((size, size), Image.Resampling.NEAREST)
        images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
        masks.append(np.asarray(binary, dtype=np.uint8)[None])
    x = torch.from_numpy(np.stack(images)).float().div_(255.0)
    m = (torch.from_numpy(np.stack(masks)) > 127).float()
    return x, m


def load_eorssd(arg: str, *, seed: int = 0) -> SODData:
    """``eorssd:/path[?size=N&threshold=T]``: read an EORSSD-style folder (see the module doc); ``seed`` is unused."""
    del seed  # the files fix everything
    path, query = split_path_query(arg)
    if not path.strip():
        raise DatasetError("the eorssd spec needs a folder: 'eorssd:/path/to/EORSSD[?size=128]'")
    where = f"eorssd:{arg}"
    opts = parse_options(query, {"size": int, "threshold": int}, where=where)
    size = require_range(where, "size", opts.get("size", DEFAULT_SIZE), 8, 4096)
    threshold = opts.get("threshold")
    if threshold is not None:
        require_range(where, "threshold", threshold, 1, 255)
    train_images, train_masks, test_images, test_masks = _resolve_layout(Path(path.strip()).expanduser())
    x_train, m_train = _read_split(train_images, train_masks, size, threshold)
    x_test, m_test = _read_split(test_images, test_masks, size, threshold)
    return SODData(x_train, m_train, x_test, m_test, name=f"eorssd:{arg}")


DATASETS.add("eorssd", load_eorssd, task=SOD)


def write_sod_folder(
    data_or_tensors: SODData | Sequence[torch.Tensor],
    out_dir: str | Path,
    *,
    layout: str = "eorssd",
    overwrite: bool = False,
) -> Path:
    """Write images and masks as PNG files in an EORSSD layout under ``out_dir``; returns ``out_dir``.

    ``data_or_tensors`` is an :class:`SODData` or the four tensors ``(x_train, m_train, x_test, m_test)``.
    ``layout='eorssd'`` writes ``train-images/``, ``train-labels/``, ``test-images/``, ``test-labels/``;
    ``layout='split-folders'`` writes ``train/images``, ``train/masks``, ``test/images``, ``test/masks``.  Files are
    ``0000.png``, ``0001.png``, ... (images 8-bit RGB, masks 0/255).  ``eorssd:OUT_DIR?size=H`` reads it back, the
    images to within 1/510 (8-bit rounding) and the masks exactly.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"write_sod_folder: unknown layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    if isinstance(data_or_tensors, SODData):
        data = data_or_tensors
    else:
        tensors = tuple(data_or_tensors)
        if len(tensors) != 4:
            raise ConfigError(f"write_sod_folder: pass an SODData or (x_train, m_train, x_test, m_test), got "
                              f"{len(tensors)} tensors")
        data = SODData(*tensors, name=str(out_dir))
    out_dir = Path(out_dir)
    dirs = [out_dir / n for n in LAYOUTS[layout]]
    busy = [d for d in dirs if d.is_dir() and any(d.iterdir())]
    if busy and not overwrite:
        raise ConfigError(f"write_sod_folder: '{busy[0]}' already holds files; choose an empty out_dir or pass "
                          "overwrite=True")
    splits = ((data.x_train, data.m_train), (data.x_test, data.m_test))
    for (x, m), image_dir, mask_dir in zip(splits, dirs[0::2], dirs[1::2], strict=True):
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        pixels = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        labels = (m.detach().cpu()[:, 0] > 0.5).numpy().astype(np.uint8) * 255
        width = max(4, len(str(len(x) - 1)))
        for i in range(len(x)):
            Image.fromarray(pixels[i], mode="RGB").save(image_dir / f"{i:0{width}d}.png")
            Image.fromarray(labels[i], mode="L").save(mask_dir / f"{i:0{width}d}.png")
    return out_dir


# --------------------------------------------------------------------------------------------------- synthetic scenes

def _noise(n: int, size: int, gen: torch.Generator, *, start: int, octaves: int) -> torch.Tensor:
    """Multi-octave value noise ``(n,1,size,size)`` in about [0,1]: random grids upsampled bilinearly and summed."""
    total = torch.zeros(n, 1, size, size)
    weight_sum = 0.0
    for octave in range(octaves):
        res = min(start * 2**octave, size)
        grid = torch.rand(n, 1, res + 1, res + 1, generator=gen)
        weight = 0.5**octave
        total += weight * F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)
        weight_sum += weight
    return total / weight_sum


_LAND = (((0.30, 0.42, 0.22), (0.42, 0.50, 0.28)),  # green fields
         ((0.48, 0.40, 0.30), (0.36, 0.30, 0.22)),  # brown soil
         ((0.66, 0.60, 0.46), (0.56, 0.52, 0.40)))  # sand / dry grass
_WATER = ((0.08, 0.22, 0.34), (0.12, 0.30, 0.32))
_ROOFS = ((0.88, 0.88, 0.86), (0.74, 0.28, 0.20), (0.55, 0.62, 0.72), (0.92, 0.84, 0.70))


def _shape(kind: str, u: torch.Tensor, v: torch.Tensor, length: float, width: float, variant: bool) -> torch.Tensor:
    """Boolean footprint in the object's own frame (``u`` along its length, ``v`` across)."""
    if kind == "ship":  # blunt stern at -u, pointed bow at +u
        taper = ((length - u) / (0.4 * length)).clamp(0, 1)
        return (u.abs() <= length) & (v.abs() <= width * taper)
    if kind == "building":
        box = (u.abs() <= length) & (v.abs() <= width)
        if variant:  # L-shaped block
            box &= ~((u > 0.2 * length) & (v > 0.1 * width))
        return box
    body = max(1.0, 0.14 * length)  # plane: fuselage, swept wings, tailplane
    fuselage = (u.abs() <= length) & (v.abs() <= body)
    wings = ((u - (0.15 * length - 0.45 * v.abs())).abs() <= 0.16 * length) & (v.abs() <= 0.9 * length)
    tail = ((u - (-0.82 * length - 0.2 * v.abs())).abs() <= 0.09 * length) & (v.abs() <= 0.38 * length)
    return fuselage | wings | tail


def _luminance(colour: torch.Tensor) -> float:
    return float(0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2])


def generate_sod_scenes(n: int, size: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic top-view scenes ``(n,3,size,size)`` in [0,1] and binary masks ``(n,1,size,size)``.

    Each scene is terrain (two-colour field patches, optional road) or water (ripples), with 1-3 salient objects
    drawn in a contrasting colour: ships on water, buildings (rectangles, L-blocks) or planes on land, each with a
    cast shadow that is not part of the mask.  A 3x3 blur and sensor noise finish the image.  Everything comes
    from one ``torch.Generator`` seeded with ``seed``, so the same arguments give identical tensors.
    """
    gen = torch.Generator().manual_seed(seed)
    scale = size / 64.0
    coarse = _noise(n, size, gen, start=3, octaves=3)
    fine = _noise(n, size, gen, start=max(2, size // 4), octaves=2)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    images = torch.empty(n, 3, size, size)
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        water = _uniform(gen, 0, 1) < 0.35
        if water:
            c1, c2 = (torch.tensor(c) for c in _WATER)
            patch = coarse[i]
            texture = 0.06 * (fine[i] - 0.5)
        else:
            c1, c2 = (torch.tensor(c) for c in _LAND[_choice(gen, len(_LAND))])
            patch = ((coarse[i] - 0.5) * 6).sigmoid()  # crisp field borders
            texture = 0.12 * (fine[i] - 0.5)
        shift = torch.tensor([_uniform(gen, -0.05, 0.05) for _ in range(3)])
        img = c1.view(3, 1, 1) * (1 - patch) + c2.view(3, 1, 1) * patch + texture + shift.view(3, 1, 1)
        if not water and _uniform(gen, 0, 1) < 0.5:  # a straight road: long, thin and not salient
            angle = _uniform(gen, 0, math.pi)
            px, py = _uniform(gen, 0.2, 0.8) * size, _uniform(gen, 0.2, 0.8) * size
            dist = ((xx - px) * math.sin(angle) - (yy - py) * math.cos(angle)).abs()
            road = (dist <= 1.2 * scale).float()
            img = img * (1 - road) + torch.tensor([0.52, 0.50, 0.47]).view(3, 1, 1) * road
        background = _luminance(img.mean(dim=(1, 2)))
        mask = torch.zeros(size, size, dtype=torch.bool)
        for _ in range(1 + _choice(gen, 3)):
            if water:
                kind, length, width = "ship", _uniform(gen, 5, 10) * scale, _uniform(gen, 1.6, 3.0) * scale
                colour = torch.tensor([_uniform(gen, 0.78, 0.95)] * 3)
            else:
                kind = "plane" if _uniform(gen, 0, 1) < 0.35 else "building"
                if kind == "plane":
                    length, width = _uniform(gen, 7, 11) * scale, 0.0
                    colour = torch.tensor([_uniform(gen, 0.82, 0.96)] * 3)
                else:
                    length, width = _uniform(gen, 3, 8) * scale, _uniform(gen, 3, 7) * scale
                    colour = torch.tensor(_ROOFS[_choice(gen, len(_ROOFS))]) * _uniform(gen, 0.9, 1.05)
                if abs(_luminance(colour) - background) < 0.25:  # keep the object salient
                    colour = colour * 0.35 if background > 0.5 else (colour + 0.35).clamp(max=1.0)
            reach = max(length, width) + 1
            cx, cy = _uniform(gen, reach, size - reach), _uniform(gen, reach, size - reach)
            theta = _uniform(gen, 0, 2 * math.pi)
            cos, sin = math.cos(theta), math.sin(theta)
            variant = _uniform(gen, 0, 1) < 0.4
            u = (xx - cx) * cos + (yy - cy) * sin
            v = -(xx - cx) * sin + (yy - cy) * cos
            body = _shape(kind, u, v, length, width, variant)
            offset = 1.5 * scale
            su, sv = u - offset * (cos + sin), v - offset * (cos - sin)  # the same shape moved down-right
            shadow = _shape(kind, su, sv, length, width, variant) & ~body & ~mask
            img = torch.where(shadow, img * 0.55, img)
            detail = 1 + 0.08 * (fine[i] - 0.5)
            img = torch.where(body, colour.view(3, 1, 1) * detail, img)
            mask |= body
        kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
        blur = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
        img = F.conv2d(F.pad(img[None], (1, 1, 1, 1), mode="replicate"), blur, groups=3)[0]
        img = img + 0.01 * torch.randn(img.shape, generator=gen)
        images[i] = img.clamp(0, 1)
        masks[i, 0] = mask.float()
    return images, masks


def load_synthetic_sod(arg: str, *, seed: int = 0) -> SODData:
    """``synthetic-sod[:n=200,size=64]``: :func:`generate_sod_scenes`, the first 70% for training, the rest test."""
    where = f"synthetic-sod:{arg}" if arg else "synthetic-sod"
    opts = {**SYNTHETIC_DEFAULTS, **parse_options(arg, {"n": int, "size": int}, where=where)}
    n = require_range(where, "n", opts["n"], 2, 100_000)
    size = require_range(where, "size", opts["size"], 16, 1024)
    if n * size * size > 60_000_000:
        raise DatasetError(f"{where}: n={n} at size={size} would need more than ~1 GB; lower n or size")
    x, m = generate_sod_scenes(n, size, seed=seed)
    n_train = min(n - 1, max(1, round(TRAIN_FRACTION * n)))
    return SODData(x[:n_train], m[:n_train], x[n_train:], m[n_train:], name=where)


DATASETS.add("synthetic-sod", load_synthetic_sod, task=SOD)
