"""Natural-looking cloud masks and cloudy images (Sun, Fu, Li et al., arXiv 2306.17431).

The adversarial-cloud attack of Sun, Fu, Li et al., "Adversarial Cloud Attack and DefenseNet for Remote
Sensing Salient Object Detection" (arXiv 2306.17431), starts from a *natural* cloud over the image and only
then adds its adversarial exposure and noise.  This module builds that natural cloud in three separate steps,
so that, as in kornia, the random parameters are sampled apart from the (differentiable) functions that apply
them and a sampled cloud can be replayed or refined:

1. :func:`cloud_noise` — fractal Brownian motion: a sum of ``octaves`` layers of Perlin gradient noise
   (K. Perlin, "An image synthesizer", SIGGRAPH 1985; with the quintic fade of "Improving noise",
   SIGGRAPH 2002), each at twice the frequency and ``persistence`` times the amplitude of the previous one.
   Every random number comes from an explicit :class:`torch.Generator`.
2. :func:`cloud_mask` — a soft threshold ``M = thickness * sigmoid((noise - t) / softness)``.  The threshold
   ``t`` is the per-image ``(1 - coverage)`` quantile of the noise, so the share of *cloudy* pixels (opacity
   above ``thickness / 2``) equals ``coverage`` whatever the noise's histogram.  ``M`` is differentiable with
   respect to the noise and, when they are tensors, to ``coverage`` and ``thickness``.
3. :func:`cloudify` — alpha compositing ``x_c = x (1 - M) + c M`` with a white or tinted colour ``c``.

:class:`CloudSpec` bundles the knobs with validation, :func:`sample_clouds` runs steps 1 and 2, and
:func:`cloudify_folder` (the library side of ``advbench cloudify``) writes a cloudy copy of an image folder.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from advbench.errors import ConfigError, DatasetError, InputError, MissingPathError

#: Image suffixes that ``advbench cloudify`` cloudifies; every other file is copied unchanged.
CLOUD_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
#: Folder names whose files are annotations (saliency masks, labels) and are copied, never cloudified.
MASK_FOLDER_NAMES = frozenset({"masks", "labels", "gt"})
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, for the grey value of a colour on a 1-channel image


# --------------------------------------------------------------------------------------------------- validation
def _require_unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _require_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _require_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _per_sample(value: float | torch.Tensor, name: str, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a (B,) tensor on ``like``'s device and dtype; a tensor keeps its autograd graph."""
    batch = like.shape[0]
    if isinstance(value, torch.Tensor):
        if value.numel() not in (1, batch):
            raise ConfigError(
                f"{name} must be a number, a one-element tensor or a tensor of {batch} values (one per image), "
                f"got shape {tuple(value.shape)}"
            )
        with torch.no_grad():
            if not bool(((value >= 0) & (value <= 1)).all()):
                raise ConfigError(f"{name} must lie in [0, 1]; clamp it first (got values in "
                                  f"[{float(value.min()):.4g}, {float(value.max()):.4g}])")
        return value.to(device=like.device, dtype=like.dtype).reshape(-1).expand(batch)
    return torch.full((batch,), _require_unit(name, value), device=like.device, dtype=like.dtype)


# ------------------------------------------------------------------------------------------------------- noise
def _fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic interpolant 6t^5 - 15t^4 + 10t^3 (zero first and second derivative at 0 and 1)."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def _perlin_layer(batch: int, height: int, width: int, cells: float, generator: torch.Generator,
                  dtype: torch.dtype) -> torch.Tensor:
    """One octave of 2-D Perlin gradient noise, (B,H,W), with ``cells`` lattice cells across the longer side.

    Random unit gradients sit on the integer lattice; a pixel's value blends, with the fade curve, the dot
    products of the four surrounding gradients with the pixel's offsets from those corners.  A random offset
    of the lattice per image keeps the octaves' lattice points (where Perlin noise is 0) from lining up.
    """
    device = generator.device
    step = cells / max(height, width)  # lattice units per pixel
    grid_h, grid_w = math.floor(height * step) + 3, math.floor(width * step) + 3
    angles = torch.rand(batch, grid_h, grid_w, generator=generator, device=device, dtype=dtype) * (2 * math.pi)
    grads = torch.stack((angles.cos(), angles.sin()), dim=-1)  # (B, gh, gw, 2): (gy, gx)
    shift = torch.rand(batch, 2, generator=generator, device=device, dtype=dtype)
    py = (torch.arange(height, device=device, dtype=dtype) + 0.5) * step + shift[:, :1]  # (B,H)
    px = (torch.arange(width, device=device, dtype=dtype) + 0.5) * step + shift[:, 1:]  # (B,W)
    y0, x0 = py.floor(), px.floor()
    fy, fx = py - y0, px - x0
    y0, x0 = y0.long(), x0.long()
    rows = torch.arange(batch, device=device)[:, None, None]

    def corner(dy: int, dx: int) -> torch.Tensor:
        g = grads[rows, (y0 + dy)[:, :, None], (x0 + dx)[:, None, :]]  # (B,H,W,2)
        return g[..., 0] * (fy - dy)[:, :, None] + g[..., 1] * (fx - dx)[:, None, :]

    u, v = _fade(fy)[:, :, None], _fade(fx)[:, None, :]
    top = torch.lerp(corner(0, 0), corner(0, 1), v)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), v)
    return torch.lerp(top, bottom, u)


def cloud_noise(
    batch: int,
    height: int,
    width: int,
    *,
    octaves: int = 5,
    persistence: float = 0.5,
    base_scale: float = 0.25,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Multi-octave Perlin noise (fractal Brownian motion), shape (B,1,H,W), rescaled per image to [0, 1].

    Octave ``o`` (from 0) has ``2**o / base_scale`` lattice cells across the longer image side and amplitude
    ``persistence**o`` (Perlin 1985; quintic fade of Perlin 2002).  ``base_scale`` is the size of a coarsest
    cell as a fraction of the longer side: 0.25 gives 4 cells, larger values give larger clouds.  The noise
    lives on ``generator``'s device; the same generator state gives the same noise.

    >>> g = torch.Generator().manual_seed(0)
    >>> n = cloud_noise(2, 16, 24, generator=g)
    >>> tuple(n.shape), float(n.min()) >= 0.0, float(n.max()) <= 1.0
    ((2, 1, 16, 24), True, True)
    """
    _require_int("batch", batch, 1)
    _require_int("height", height, 1)
    _require_int("width", width, 1)
    _require_int("octaves", octaves, 1)
    if _require_positive("persistence", persistence) > 1:
        raise ConfigError(f"persistence must be in (0, 1] (each octave weaker than the last), got {persistence!r}")
    cells = 1.0 / _require_positive("base_scale", base_scale)
    if not isinstance(generator, torch.Generator):
        raise ConfigError("cloud_noise needs generator=torch.Generator().manual_seed(seed); the global RNG is not used")
    total = torch.zeros(batch, height, width, device=generator.device, dtype=dtype)
    for octave in range(octaves):
        total += persistence**octave * _perlin_layer(batch, height, width, cells * 2**octave, generator, dtype)
    flat = total.reshape(batch, -1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    flat = (flat - low) / (high - low).clamp_min(torch.finfo(dtype).tiny)
    return flat.reshape(batch, 1, height, width)


# -------------------------------------------------------------------------------------------------------- mask
def cloud_mask(
    noise: torch.Tensor,
    *,
    coverage: float | torch.Tensor = 0.5,
    thickness: float | torch.Tensor = 0.8,
    softness: float = 0.05,
) -> torch.Tensor:
    """Cloud opacity ``M = thickness * sigmoid((noise - t) / softness)`` in [0, thickness], shape (B,1,H,W).

    ``t`` is each image's ``(1 - coverage)`` quantile of ``noise`` (linear interpolation between order
    statistics), so a share ``coverage`` of the pixels is *cloudy* (opacity above ``thickness / 2``) and the
    mask grows monotonically with ``coverage``.  ``softness`` is the width of the cloud edges in noise units.
    ``coverage`` and ``thickness`` are numbers or tensors with one value or one per image; the result is
    differentiable with respect to ``noise`` and to tensor-valued ``coverage`` and ``thickness``.

    >>> noise = torch.linspace(0, 1, 4).reshape(1, 1, 2, 2)
    >>> m = cloud_mask(noise, coverage=0.5, thickness=1.0)
    >>> int((m > 0.5).sum()), float(m.max()) <= 1.0
    (2, True)
    """
    if not isinstance(noise, torch.Tensor) or noise.dim() != 4 or noise.shape[1] != 1 or not noise.is_floating_point():
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise InputError(f"noise must be a float tensor of shape (B,1,H,W) such as cloud_noise returns, got {shape}")
    if noise.numel() == 0:
        raise InputError(f"noise must not be empty, got shape {tuple(noise.shape)}")
    softness = _require_positive("softness", softness)
    batch = noise.shape[0]
    cov = _per_sample(coverage, "coverage", noise)
    thick = _per_sample(thickness, "thickness", noise)
    flat = noise.reshape(batch, -1)
    count = flat.shape[1]
    ordered = flat.sort(dim=1).values
    pos = (1 - cov) * (count - 1)
    lo = pos.detach().floor().long().clamp(0, count - 1)
    hi = (lo + 1).clamp(max=count - 1)
    frac = pos - lo.to(pos.dtype)  # carries the gradient with respect to coverage
    v_lo = ordered.gather(1, lo[:, None]).squeeze(1)
    v_hi = ordered.gather(1, hi[:, None]).squeeze(1)
    threshold = v_lo + frac * (v_hi - v_lo)
    return thick.view(batch, 1, 1, 1) * torch.sigmoid((noise - threshold.view(batch, 1, 1, 1)) / softness)


def colour_tensor(colour: Sequence[float] | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The cloud colour as a (B or 1, C, 1, 1) tensor for the image ``x`` of C channels."""
    channels = x.shape[1]
    if isinstance(colour, torch.Tensor):
        c = colour.to(device=x.device, dtype=x.dtype)
    else:
        try:
            c = torch.tensor([float(v) for v in colour], device=x.device, dtype=x.dtype)
        except (TypeError, ValueError):
            raise ConfigError(
                f"colour must be a sequence of numbers in [0, 1] such as (1, 1, 1), got {colour!r}"
            ) from None
    if c.dim() == 1:
        c = c[None]
    if c.dim() != 2 or c.shape[0] not in (1, x.shape[0]):
        raise ConfigError(f"colour must have shape (C,) or (B, C), got {tuple(c.shape)} for images of shape "
                          f"{tuple(x.shape)}")
    if c.shape[1] == 3 and channels == 1:
        c = c @ torch.tensor(_LUMA, device=x.device, dtype=x.dtype)[:, None]
    elif c.shape[1] == 1 and channels != 1:
        c = c.expand(c.shape[0], channels)
    if c.shape[1] != channels:
        raise ConfigError(f"colour has {c.shape[1]} values but the images have {channels} channels; give one value "
                          "per channel")
    with torch.no_grad():
        if not bool(((c >= 0) & (c <= 1)).all()):
            raise ConfigError(f"colour values must lie in [0, 1], got {c.flatten().tolist()}")
    return c[:, :, None, None]


def cloudify(
    x: torch.Tensor, mask: torch.Tensor, colour: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0)
) -> torch.Tensor:
    """Composite a cloud over images: ``x_c = x (1 - M) + c M`` (after Sun, Fu, Li et al., arXiv 2306.17431).

    ``x`` is (B,C,H,W) in [0, 1]; ``mask`` is (B,1,H,W) or (B,C,H,W) in [0, 1] with the same B, H, W;
    ``colour`` is one value per channel in [0, 1] (white by default, or a tint; a (B,C) tensor gives one colour
    per image; an RGB colour on 1-channel images is turned into its BT.601 grey).

    >>> x = torch.zeros(1, 3, 1, 2)
    >>> cloudify(x, torch.tensor([[[[0.0, 0.5]]]]), colour=(1.0, 0.5, 0.0))[0, :, 0, 1].tolist()
    [0.5, 0.25, 0.0]
    """
    for name, t in (("x", x), ("mask", mask)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or not t.is_floating_point():
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise InputError(f"{name} must be a float NCHW tensor, got {shape}")
    if mask.shape[0] != x.shape[0] or mask.shape[2:] != x.shape[2:] or mask.shape[1] not in (1, x.shape[1]):
        raise InputError(
            f"cloud mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(x.shape)}: the mask must "
            f"be ({x.shape[0]}, 1, {x.shape[2]}, {x.shape[3]}); sample it at the image size or resize it"
        )
    with torch.no_grad():
        for name, t in (("x", x), ("mask", mask)):
            if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
                raise InputError(f"{name} must lie in [0, 1], got values in [{float(t.min()):.4g}, "
                                 f"{float(t.max()):.4g}]; images are [0,1] floats (divide uint8 by 255)")
    c = colour_tensor(colour, x)
    return x * (1 - mask) + c * mask


# -------------------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class CloudSpec:
    """The knobs of a natural cloud, validated when built (see :func:`cloud_noise` and :func:`cloud_mask`).

    ``coverage``: share of cloudy pixels, in [0, 1].  ``thickness``: peak opacity, in [0, 1].  ``softness``:
    edge width in noise units (> 0).  ``octaves`` (>= 1), ``persistence`` (in (0, 1]) and ``base_scale`` (> 0)
    shape the Perlin noise.  ``colour``: RGB cloud colour in [0, 1] (white by default).
    """

    coverage: float = 0.5
    thickness: float = 0.8
    softness: float = 0.05
    octaves: int = 5
    persistence: float = 0.5
    base_scale: float = 0.25
    colour: tuple[float, float, float] = field(default=(1.0, 1.0, 1.0))

    def __post_init__(self) -> None:
        _require_unit("CloudSpec.coverage", self.coverage)
        _require_unit("CloudSpec.thickness", self.thickness)
        _require_positive("CloudSpec.softness", self.softness)
        _require_int("CloudSpec.octaves", self.octaves, 1)
        if _require_positive("CloudSpec.persistence", self.persistence) > 1:
            raise ConfigError(f"CloudSpec.persistence must be in (0, 1], got {self.persistence!r}")
        _require_positive("CloudSpec.base_scale", self.base_scale)
        colour = tuple(self.colour)
        if len(colour) != 3:
            raise ConfigError(f"CloudSpec.colour needs 3 values (r, g, b) in [0, 1], got {self.colour!r}")
        object.__setattr__(self, "colour", tuple(_require_unit("CloudSpec.colour", v) for v in colour))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, for run records."""
        data = asdict(self)
        data["colour"] = list(self.colour)
        return data


def sample_clouds(spec: CloudSpec, batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Sample ``batch`` natural cloud masks (B,1,H,W) in [0, ``spec.thickness``] from ``generator``."""
    noise = cloud_noise(batch, height, width, octaves=spec.octaves, persistence=spec.persistence,
                        base_scale=spec.base_scale, generator=generator)
    return cloud_mask(noise, coverage=spec.coverage, thickness=spec.thickness, softness=spec.softness)


def parse_colour(text: str, *, option: str = "--colour") -> tuple[float, float, float]:
    """``'1,0.9,0.8'`` -> ``(1.0, 0.9, 0.8)``; the error names ``option``.

    >>> parse_colour("1, 0.5,0")
    (1.0, 0.5, 0.0)
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise ConfigError(f"{option} '{text}' must be three numbers in [0, 1] separated by commas, e.g. 1,1,1 "
                          "(white) or 0.9,0.9,1 (bluish)")
    return values  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------------ folders
@dataclass(frozen=True)
class CloudifyReport:
    """What :func:`cloudify_folder` wrote."""

    out: Path
    clouds: Path
    images: int
    copied: int


def is_mask_path(rel: Path) -> bool:
    """True when a folder on ``rel``'s path is an annotation folder: masks, labels, gt or ``*-labels``."""
    return any(part.lower() in MASK_FOLDER_NAMES or part.lower().endswith("-labels") for part in rel.parts[:-1])


def image_seed(seed: int, rel: Path) -> int:
    """A per-image seed from the run seed and the image's relative path (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}/{rel.as_posix()}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _check_image_header(src: Path) -> None:
    """Fail now, before the long loop and its progress bar, on a file that PIL cannot even identify (reading
    the header is cheap; a file broken further in is still caught when :func:`_cloudify_file` loads it)."""
    from PIL import Image

    try:
        with Image.open(src):
            pass
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image file '{src}' ({exc}); fix or delete it") from exc


def _cloudify_file(src: Path, dst: Path, mask_dst: Path, spec: CloudSpec, seed: int) -> None:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(src) as opened:
            opened.load()
            img = opened.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image file '{src}' ({exc}); fix or delete it") from exc
    alpha = img.convert("RGBA").getchannel("A") if ("A" in img.getbands() or "transparency" in img.info) else None
    mode = "L" if img.mode in ("1", "L", "LA") else "RGB"
    pixels = np.asarray(img.convert(mode), dtype=np.uint8)
    x = torch.from_numpy(pixels.copy()).float().div(255)
    x = x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None]
    mask = sample_clouds(spec, 1, x.shape[2], x.shape[3], torch.Generator().manual_seed(seed))
    cloudy = cloudify(x, mask, spec.colour)[0].mul(255).round().clamp(0, 255).to(torch.uint8)
    array = cloudy[0].numpy() if mode == "L" else cloudy.permute(1, 2, 0).numpy()
    result = Image.fromarray(array, mode)
    if alpha is not None:
        result.putalpha(alpha)
    dst.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"quality": 95} if dst.suffix.lower() in (".jpg", ".jpeg") else {}
    extra.update({key: img.info[key] for key in ("exif", "icc_profile") if img.info.get(key)})  # keep orientation
    result.save(dst, **extra)
    mask_dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask[0, 0].mul(255).round().clamp(0, 255).to(torch.uint8).numpy(), "L").save(mask_dst)


def cloudify_folder(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    spec: CloudSpec | None = None,
    *,
    seed: int = 0,
    clouds_dir: str = "clouds",
    progress: bool = False,
) -> CloudifyReport:
    """Write a cloudy copy of the image data set under ``src`` to the new or empty folder ``out``.

    Every image (png, jpg, jpeg, bmp, tif) gets a natural cloud (:func:`sample_clouds` with a seed derived from
    ``seed`` and its relative path, see :func:`image_seed`) and is written to the same relative path under
    ``out``; its cloud opacity is written as an 8-bit grey PNG to ``out/<clouds_dir>/<relative path>.png``
    (the image suffix replaced).  Files in annotation folders (``masks``, ``labels``, ``gt``, ``*-labels``,
    any depth, case-insensitive) and all non-image files are copied unchanged.  The copy is assembled in a
    hidden sibling folder and moved into place at the end, so a failure leaves no partial ``out``.
    ``progress`` shows a bar on stderr counting the images cloudified.
    """
    from advbench.progress import progress_bar

    spec = spec if spec is not None else CloudSpec()
    src_path, out_path = Path(src).expanduser(), Path(out).expanduser()
    if not src_path.exists():
        raise MissingPathError(f"source folder '{src_path}' does not exist; check SRC")
    if not src_path.is_dir():
        raise ConfigError(f"SRC '{src_path}' is a file; give the folder of the data set")
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise ConfigError(f"OUT '{out_path}' exists and is not an empty folder; give a new folder or empty it first")
    src_real, out_real = src_path.resolve(), out_path.resolve()
    if out_real == src_real or src_real in out_real.parents:
        raise ConfigError(f"OUT '{out_path}' lies inside SRC '{src_path}'; write the copy outside the source folder")
    if not clouds_dir or Path(clouds_dir).name != clouds_dir or clouds_dir.startswith("."):
        raise ConfigError(f"clouds_dir must be a plain folder name such as 'clouds', got {clouds_dir!r}")
    if (src_path / clouds_dir).exists():
        raise ConfigError(f"SRC already has '{clouds_dir}' at its top level, where the cloud masks would go; "
                          "choose another name for the masks folder (--clouds-dir)")

    files = sorted(p for p in src_path.rglob("*") if p.is_file())
    images: list[Path] = []
    copies: list[Path] = []
    for path in files:
        rel = path.relative_to(src_path)
        is_image = path.suffix.lower() in CLOUD_IMAGE_SUFFIXES and not is_mask_path(rel)
        (images if is_image else copies).append(rel)
    if not images:
        raise DatasetError(f"SRC '{src_path}' holds no images to cloudify ({', '.join(sorted(CLOUD_IMAGE_SUFFIXES))}"
                           " outside masks/labels/gt folders)")
    mask_names: dict[Path, Path] = {}
    for rel in images:
        mask_rel = rel.with_suffix(".png")
        if mask_rel in mask_names:
            raise DatasetError(f"images '{mask_names[mask_rel]}' and '{rel}' would share the cloud mask "
                               f"'{clouds_dir}/{mask_rel}'; rename one of them")
        mask_names[mask_rel] = rel
    for rel in images:
        _check_image_header(src_path / rel)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    staging = out_path.parent / f".{out_path.name}.partial-{os.getpid()}"
    if staging.exists():
        raise ConfigError(f"staging folder '{staging}' is left over from an interrupted run; delete it and retry")
    staging.mkdir()
    try:
        for rel in copies:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src_path / rel, staging / rel)
        with progress_bar(total=len(mask_names), desc="cloudify", unit="image", enabled=progress) as bar:
            for mask_rel, rel in mask_names.items():
                _cloudify_file(src_path / rel, staging / rel, staging / clouds_dir / mask_rel, spec,
                               image_seed(seed, rel))
                bar.update(1)
        if out_path.exists():
            out_path.rmdir()
        staging.rename(out_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CloudifyReport(out=out_path, clouds=out_path / clouds_dir, images=len(images), copied=len(copies))
