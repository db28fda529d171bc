"""Placing an adversarial patch on vehicle roofs, differentiably, with Thys-style random transforms.

The patch recipe follows Thys, Van Ranst & Goedemé, "Fooling automated surveillance cameras" (CVPRW 2019) and Du et
al. (WACV 2022) for aerial cars, as EVD4UAV (Sun, Guo et al., arXiv 2403.05422) uses it: before placement the patch
is median-filtered and jittered in contrast (0.8-1.2), brightness (±0.1), per-pixel noise (±0.1) and rotation
(±20°), then scaled to the vehicle and pasted on its roof.

Placement is a per-vehicle affine warp (``grid_sample``) of the patch into the rotated box of the
vehicle.  The patch rectangle covers ``fraction = (along, across)`` of the box's length and width; if a
rotation jitter would push its corners outside the box, the patch is shrunk until it fits, so a patch
never leaves its placement region.  Composition is ``x (1 - M) + P M`` with ``M`` the rectangle's (anti-aliased)
coverage, so the result stays in [0, 1] and no pixel whose centre is outside the rectangle changes.

A camera pixel integrates the light over its whole footprint, so a patch seen from higher up loses its fine
detail.  With ``PatchPlacement(footprint_filter=True)`` each vehicle's copy of the patch is low-passed to its
pixel footprint before it is sampled: a mipmap (2x2 box averages) blended between the two levels nearest to
``log2(texels per pixel)``.  Without it (the default, as in Thys et al.'s recipe) a 24-texel patch imaged
across 4 pixels is point-sampled, showing the detector aliased texel patterns that no printed patch could
show at that altitude.

>>> images = torch.zeros(1, 3, 32, 32)
>>> rboxes = [torch.tensor([[16.0, 16.0, 20.0, 10.0, 0.0]])]
>>> out = apply_patch(images, torch.ones(3, 8, 8), rboxes, PatchPlacement(fraction=(0.5, 0.8)))
>>> round(float(out[0, 0].sum()))  # a 10 x 8 pixel patch of ones
80
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F

from advbench.errors import ConfigError, InputError


@dataclass(frozen=True)
class PatchTransform:
    """Thys et al. (2019) training-time jitter; every range is symmetric about "no change"."""

    median: bool = True
    contrast: tuple[float, float] = (0.8, 1.2)
    brightness: float = 0.1
    noise: float = 0.1
    rotation: float = 20.0

    def __post_init__(self) -> None:
        lo, hi = self.contrast
        if not 0 < lo <= hi:
            raise ConfigError(f"contrast range must satisfy 0 < low <= high, got {self.contrast}")
        for name in ("brightness", "noise", "rotation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"PatchTransform.{name} must be >= 0, got {getattr(self, name)}")


#: No jitter: the placement used to evaluate a patch.
NO_JITTER = PatchTransform(median=False, contrast=(1.0, 1.0), brightness=0.0, noise=0.0, rotation=0.0)


@dataclass(frozen=True)
class PatchPlacement:
    """Where the patch goes: the centre of each vehicle's rotated box, aligned with it.

    ``fraction`` = (share of the box length, share of the box width) the patch spans before any rotation
    jitter; both must lie in (0, 1] so the patch stays on the vehicle.
    """

    fraction: tuple[float, float] = (0.5, 0.8)
    #: Low-pass each copy to its pixel footprint (see the module docstring); off = plain bilinear sampling.
    footprint_filter: bool = False

    def __post_init__(self) -> None:
        if len(self.fraction) != 2 or not all(0 < f <= 1 for f in self.fraction):
            raise ConfigError(f"patch fraction must be two numbers in (0, 1] (along, across), got {self.fraction}")


@dataclass
class JitterDraws:
    """The random part of the Thys jitter for ``n`` patch copies: contrast and brightness (n, 1, 1, 1), per-texel
    noise (n, 3, P, Q) or None, and rotation offsets in degrees (n,)."""

    contrast: torch.Tensor
    brightness: torch.Tensor
    noise: torch.Tensor | None
    angles: torch.Tensor

    def to(self, like: torch.Tensor) -> JitterDraws:
        """On ``like``'s device and dtype."""
        return JitterDraws(self.contrast.to(like), self.brightness.to(like),
                           None if self.noise is None else self.noise.to(like), self.angles.to(like))


def draw_jitter(n: int, patch_shape: Sequence[int], transform: PatchTransform, gen: torch.Generator | None,
                dtype: torch.dtype = torch.float32) -> JitterDraws:
    """Draw the jitter of ``n`` copies of a (3, P, Q) patch from ``gen``, on ``gen``'s device (the CPU without one).

    The draw order (contrast, brightness, noise, rotation) is part of a seed's meaning: a seed gives the same
    jitter whether the copies are placed one image at a time or many images at once."""
    if gen is None and transform != NO_JITTER:
        raise ConfigError("a jittered patch placement needs an explicit torch.Generator (gen=...)")
    dev = gen.device if gen is not None else torch.device("cpu")

    def uniform(*shape: int, lo: float, hi: float) -> torch.Tensor:
        if lo == hi:
            return torch.full(shape, lo, device=dev, dtype=dtype)
        return torch.rand(shape, generator=gen, dtype=dtype, device=dev) * (hi - lo) + lo

    contrast = uniform(n, 1, 1, 1, lo=transform.contrast[0], hi=transform.contrast[1])
    brightness = uniform(n, 1, 1, 1, lo=-transform.brightness, hi=transform.brightness)
    noise = uniform(n, *patch_shape, lo=-transform.noise, hi=transform.noise) if transform.noise > 0 else None
    angles = uniform(n, lo=-transform.rotation, hi=transform.rotation)
    return JitterDraws(contrast, brightness, noise, angles)


def jittered_copies(patch: torch.Tensor, draws: JitterDraws, transform: PatchTransform) -> torch.Tensor:
    """The copies of ``patch`` (3, P, Q) that ``draws`` describe, in [0, 1], differentiable w.r.t. ``patch``."""
    draws = draws.to(patch)
    p = patch.unsqueeze(0)
    if transform.median and min(patch.shape[-2:]) >= 3:
        p = kornia.filters.median_blur(p, (3, 3))
    p = p.expand(draws.angles.shape[0], -1, -1, -1)
    p = p * draws.contrast + draws.brightness
    if draws.noise is not None:
        p = p + draws.noise
    if transform == NO_JITTER:  # already in [0, 1]; clamping would zero the gradient of texels at exactly 0 or 1
        return p
    return p.clamp(0, 1)


def _fit_scale(length: torch.Tensor, width: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               angle: torch.Tensor) -> torch.Tensor:
    """The largest factor <= 1 that keeps an (a x b) rectangle rotated by ``angle`` inside (length x width)."""
    c, s = torch.cos(angle).abs(), torch.sin(angle).abs()
    along = a * c + b * s
    across = a * s + b * c
    return torch.minimum(torch.ones_like(a), torch.minimum(length / along, width / across))


def patch_regions(rboxes: torch.Tensor, placement: PatchPlacement,
                  extra_angles: torch.Tensor | None = None) -> torch.Tensor:
    """The rotated rectangles ``(N, 5)`` (cx, cy, w, h, angle°) the patch occupies on ``rboxes`` (N, 5)."""
    cx, cy, length, width, angle = rboxes.unbind(-1)
    jitter = torch.zeros_like(angle) if extra_angles is None else extra_angles
    a = length * placement.fraction[0]
    b = width * placement.fraction[1]
    k = _fit_scale(length, width, a, b, torch.deg2rad(jitter))
    return torch.stack([cx, cy, a * k, b * k, angle + jitter], dim=-1)


def footprint_filter(copies: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """``copies`` (N, 3, P, Q) low-passed to the pixel footprint of their ``regions`` (N, 5).

    Level ``k`` of the mipmap averages ``2^k x 2^k`` texel blocks (then is resized back to P x Q); a copy whose
    texels-per-pixel ratio is ``r`` (the larger of its two axes) takes the levels around ``log2(r)``, blended
    linearly.  A copy shown with at least one pixel per texel is returned unchanged."""
    n, _, p, q = copies.shape
    with torch.no_grad():
        ratio = torch.maximum(q / regions[:, 2].clamp_min(1e-6), p / regions[:, 3].clamp_min(1e-6))
        lod = torch.log2(ratio.clamp_min(1.0))
        top = max(0, int(torch.ceil(lod.max())))
    if top == 0:
        return copies
    levels = [copies]
    for k in range(1, top + 1):
        size = (max(1, -(-p // 2**k)), max(1, -(-q // 2**k)))
        small = F.interpolate(copies, size=size, mode="area")
        levels.append(F.interpolate(small, size=(p, q), mode="bilinear", align_corners=False))
    stack = torch.stack(levels, dim=1)  # (N, L, 3, P, Q)
    low = lod.floor().long().clamp(max=top)
    high = (low + 1).clamp(max=top)
    frac = (lod - low.to(lod.dtype)).view(n, 1, 1, 1).to(copies.dtype)
    rows = torch.arange(n, device=copies.device)
    return stack[rows, low] * (1 - frac) + stack[rows, high] * frac


def _warp_grid(regions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sampling grids (N, H, W, 2) that map image pixels into each region's patch frame [-1, 1]^2."""
    cx, cy, pw, ph, angle = regions.unbind(-1)
    t = torch.deg2rad(angle)
    cos, sin = torch.cos(t), torch.sin(t)
    ys = torch.arange(height, device=regions.device, dtype=regions.dtype) + 0.5
    xs = torch.arange(width, device=regions.device, dtype=regions.dtype) + 0.5
    dx = xs.view(1, 1, -1) - cx.view(-1, 1, 1)
    dy = ys.view(1, -1, 1) - cy.view(-1, 1, 1)
    u = (dx * cos.view(-1, 1, 1) + dy * sin.view(-1, 1, 1)) / (pw.view(-1, 1, 1) / 2)
    v = (-dx * sin.view(-1, 1, 1) + dy * cos.view(-1, 1, 1)) / (ph.view(-1, 1, 1) / 2)
    return torch.stack([u, v], dim=-1)


def _check_patch(patch: torch.Tensor) -> None:
    if patch.dim() != 3 or patch.shape[0] != 3:
        raise InputError(f"patch must be (3, P, Q), got {tuple(patch.shape)}")


def apply_patch(images: torch.Tensor, patch: torch.Tensor, rboxes: Sequence[torch.Tensor],
                placement: PatchPlacement = PatchPlacement(), transform: PatchTransform = NO_JITTER,
                gen: torch.Generator | None = None) -> torch.Tensor:
    """Paste ``patch`` (3, P, Q) in [0, 1] on every rotated box of every image; gradients reach ``patch``.

    ``rboxes[i]`` is the (N_i, 5) tensor of image ``i``'s target vehicles (cx, cy, length, width, angle°,
    the le90 convention of :mod:`advbench.datasets.detection.geometry`).  ``transform`` draws a fresh
    jitter per vehicle from ``gen``; the default applies none.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"images must be a (B, 3, H, W) batch, got {tuple(images.shape)}")
    _check_patch(patch)
    if len(rboxes) != images.shape[0]:
        raise InputError(f"got rotated boxes for {len(rboxes)} images but {images.shape[0]} images")
    total = sum(int(r.shape[0]) for r in rboxes)
    if total == 0:
        return images
    draws = draw_jitter(total, patch.shape, transform, gen, images.dtype)
    return _place(images, patch, rboxes, placement, transform, [draws])


def apply_patch_each(images: Sequence[torch.Tensor], patch: torch.Tensor, rboxes: Sequence[torch.Tensor],
                     placement: PatchPlacement = PatchPlacement(), transform: PatchTransform = NO_JITTER,
                     gen: torch.Generator | None = None, *, batched: bool | None = None) -> list[torch.Tensor]:
    """``[apply_patch(img[None], patch, [rb], ...)[0] for img, rb in zip(images, rboxes)]``; with ``batched``
    (the default for images on a GPU) computed in one placement per image size instead of one per image.

    On a GPU the per-image version is bound by kernel launches; batching the placement removes most of them.
    ``images`` are (3, H_i, W_i).  Batched, each image's jitter is still drawn in turn, exactly as
    image-by-image placement draws it, and each image makes its copies from its own view of the patch: the
    draws and the pixels are identical.  The patch's gradient is identical in most cases; otherwise, mostly
    where a patch region is larger than the patch's texel grid, it differs in the last bits, because an image
    then shares a wider sampling window with the other images of its size (float32 sums of the same terms,
    grouped differently).  On the CPU the default stays image by image, so CPU results are bit-identical to
    those the documented tables were made with."""
    _check_patch(patch)
    if len(rboxes) != len(images):
        raise InputError(f"got rotated boxes for {len(rboxes)} images but {len(images)} images")
    for img in images:
        if img.dim() != 3 or img.shape[0] != 3:
            raise InputError(f"images must be (3, H, W), got {tuple(img.shape)}")
    if batched is None:
        batched = any(img.device.type != "cpu" for img in images)
    if not batched:
        return [apply_patch(img[None], patch, [r], placement, transform, gen)[0]
                for img, r in zip(images, rboxes, strict=True)]
    draws = [draw_jitter(int(r.shape[0]), patch.shape, transform, gen, img.dtype) if r.shape[0] else None
             for img, r in zip(images, rboxes, strict=True)]
    out = list(images)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, (img, r) in enumerate(zip(images, rboxes, strict=True)):
        if r.shape[0]:
            by_size.setdefault(tuple(img.shape), []).append(i)
    for members in by_size.values():
        placed = _place(torch.stack([images[i] for i in members]), patch, [rboxes[i] for i in members], placement,
                        transform, [draws[i] for i in members])  # type: ignore[misc]
        for i, img in zip(members, placed.unbind(0), strict=True):
            out[i] = img
    return out


def _draws_to(draws: Sequence[JitterDraws], like: torch.Tensor) -> list[JitterDraws]:
    """``draws`` on ``like``'s device and dtype, moved in one copy per field rather than one per entry."""
    if all(d.angles.device == like.device and d.angles.dtype == like.dtype for d in draws):
        return list(draws)
    sizes = [int(d.angles.shape[0]) for d in draws]

    def moved(parts: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return torch.cat(parts).to(like).split(sizes)

    contrast, brightness, angles = (moved([getattr(d, f) for d in draws]) for f in ("contrast", "brightness", "angles"))
    noise = moved([d.noise for d in draws]) if draws[0].noise is not None else None  # type: ignore[misc]
    return [JitterDraws(contrast[i], brightness[i], None if noise is None else noise[i], angles[i])
            for i in range(len(draws))]


def _place(images: torch.Tensor, patch: torch.Tensor, rboxes: Sequence[torch.Tensor], placement: PatchPlacement,
           transform: PatchTransform, draws: Sequence[JitterDraws]) -> torch.Tensor:
    """Composite the jittered copies ``draws`` describe onto ``images`` (B, 3, H, W), one per rotated box.

    Each entry of ``draws`` makes its copies from its own view of ``patch``, so the patch's gradient sums the
    same partial sums, in the same order, as placing each entry's images in a call of its own."""
    counts = [int(r.shape[0]) for r in rboxes]
    b, _, h, w = images.shape
    boxes = torch.cat([r.to(images) for r in rboxes])
    draws = _draws_to(draws, images)
    copies = torch.cat([jittered_copies(patch.to(images), d, transform) for d in draws])
    regions = patch_regions(boxes, placement, torch.cat([d.angles for d in draws]))
    if placement.footprint_filter:
        copies = footprint_filter(copies, regions)
    xs, ys, grid = _window_grid(regions)
    sampled = F.grid_sample(copies, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Coverage of a pixel = 0.5 + the distance of its centre inside the rectangle's edge, capped at 1 (the usual
    # area estimate for anti-aliasing), and 0 for every pixel whose centre is not strictly inside (so no pixel
    # outside the vehicle's box ever changes).
    half = regions[:, 2:4].view(-1, 1, 1, 2) / 2
    depth = ((1 - grid.abs()) * half).amin(dim=-1)
    inset = torch.where(depth > 0, (depth + 0.5).clamp(max=1.0), torch.zeros_like(depth)).unsqueeze(1)
    # Scatter each vehicle's window into its image (pixels of a window that fall outside the image are dropped).
    owner = torch.repeat_interleave(torch.arange(b, device=images.device), torch.tensor(counts, device=images.device),
                                    output_size=sum(counts))
    inside = (xs >= 0)[:, None, :] & (xs < w)[:, None, :] & (ys >= 0)[:, :, None] & (ys < h)[:, :, None]
    flat = (owner.view(-1, 1, 1) * h + ys.clamp(0, h - 1)[:, :, None]) * w + xs.clamp(0, w - 1)[:, None, :]
    # Window pixels outside the image go to one spare slot past the end, dropped afterwards: the same sums as
    # selecting the inside pixels first, without the host synchronisation a boolean selection costs on a GPU.
    spare = b * h * w
    index = torch.where(inside, flat, spare).reshape(-1)
    weight = inset.reshape(-1)
    values = (sampled * inset).permute(0, 2, 3, 1).reshape(-1, 3)
    colour = images.new_zeros(spare + 1, 3).index_add(0, index, values)[:spare]  # sum of P_v M_v per pixel
    cover = images.new_zeros(spare + 1).index_add(0, index, weight)[:spare]
    colour = colour.view(b, h, w, 3).permute(0, 3, 1, 2)
    cover = cover.view(b, 1, h, w)
    # Overlapping patches share the pixel in proportion to their coverage: still a convex combination.
    return images * (1 - cover.clamp(max=1.0)) + colour / cover.clamp_min(1.0)


def _window_grid(regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per region, the integer pixel columns (N, Sx) and rows (N, Sy) of a window that holds it, and the
    sampling grid (N, Sy, Sx, 2) mapping those pixels into the patch frame [-1, 1]^2.  Working in windows
    instead of whole images keeps placement cheap next to the detector."""
    cx, cy, pw, ph, angle = regions.unbind(-1)
    t = torch.deg2rad(angle)
    cos, sin = torch.cos(t), torch.sin(t)
    with torch.no_grad():
        half_x = 0.5 * (pw * cos.abs() + ph * sin.abs())
        half_y = 0.5 * (pw * sin.abs() + ph * cos.abs())
        sx, sy = int(torch.ceil(2 * half_x.max())) + 2, int(torch.ceil(2 * half_y.max())) + 2
        x0 = torch.floor(cx - sx / 2).long()
        y0 = torch.floor(cy - sy / 2).long()
    xs = x0[:, None] + torch.arange(sx, device=regions.device)
    ys = y0[:, None] + torch.arange(sy, device=regions.device)
    dx = (xs.to(regions.dtype) + 0.5)[:, None, :] - cx.view(-1, 1, 1)
    dy = (ys.to(regions.dtype) + 0.5)[:, :, None] - cy.view(-1, 1, 1)
    u = (dx * cos.view(-1, 1, 1) + dy * sin.view(-1, 1, 1)) / (pw.view(-1, 1, 1) / 2)
    v = (-dx * sin.view(-1, 1, 1) + dy * cos.view(-1, 1, 1)) / (ph.view(-1, 1, 1) / 2)
    return xs, ys, torch.stack([u, v], dim=-1)


def region_mask(rboxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean (H, W) mask of the pixels whose centre lies inside any of the rotated boxes (N, 5)."""
    if rboxes.numel() == 0:
        return torch.zeros(height, width, dtype=torch.bool)
    grid = _warp_grid(rboxes.to(torch.float64), height, width)
    return (grid.abs() <= 1).all(dim=-1).any(dim=0)


def rotated_or_axis_boxes(boxes: torch.Tensor, rotated: torch.Tensor | None) -> torch.Tensor:
    """The rotated boxes of a sample, or its axis-aligned boxes as angle-0 rotated boxes when it has none."""
    if rotated is not None:
        return rotated
    wh = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    longer = wh[:, 0] >= wh[:, 1]
    length = torch.where(longer, wh[:, 0], wh[:, 1])
    width = torch.where(longer, wh[:, 1], wh[:, 0])
    angle = torch.where(longer, 0.0, -90.0)
    return torch.stack([centre[:, 0], centre[:, 1], length, width, angle], dim=-1)


def init_patch(size: int, *, seed: int = 0, kind: str = "gray") -> torch.Tensor:
    """A starting patch (3, size, size): ``"gray"`` (0.5 everywhere) or ``"random"`` (uniform, seeded)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ConfigError(f"patch_size must be an integer >= 2, got {size!r}")
    if kind == "gray":
        return torch.full((3, size, size), 0.5)
    if kind == "random":
        return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))
    raise ConfigError(f"unknown patch init '{kind}'; use 'gray' or 'random'")

