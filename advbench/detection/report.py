"""Visual reports for detection attacks: :func:`save_detection_grid`.

A grid with one row per image and two columns, the clean image and the patched (attacked) one, as in the
qualitative figures of EVD4UAV (Sun, Guo et al., arXiv 2403.05422).  Ground-truth boxes are green; detections
at or above the score threshold are drawn in a colour per class with ``class score`` above them; a caption
gives ``found k/N`` (ground-truth vehicles detected, see :func:`~advbench.detection.metrics.match_detected`).

Layout (pixels): a title band of :data:`TITLE_HEIGHT`, then the rows, with :data:`PAD` around and between all
cells.  Each image is scaled down (never up) so its longer side is at most ``max_side``; both columns are as
wide as the widest scaled image and a row is as tall as its scaled image.  So the canvas is
``2 * width + 3 * PAD`` wide and ``TITLE_HEIGHT + sum(row heights) + (rows + 1) * PAD`` tall.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from advbench.datasets.detection.sample import DetectionSample
from advbench.detection.metrics import CheckedDetections, check_all_detections, check_thresholds, match_detections
from advbench.errors import ConfigError, InputError

#: Height of the band that holds the column titles.
TITLE_HEIGHT = 20
#: Space around and between cells.
PAD = 4
#: Colour of ground-truth boxes.
GT_COLOUR = (0, 255, 0)
#: Colours of detections, one per class (cycled).
DETECTION_COLOURS = ((255, 40, 40), (255, 0, 255), (0, 160, 255), (255, 160, 0), (255, 255, 255))
BACKGROUND = (24, 24, 24)
TITLES = ("clean", "patched")


def _check_images(images: Sequence[torch.Tensor], samples: Sequence[DetectionSample], name: str) -> None:
    if len(images) != len(samples):
        raise InputError(f"save_detection_grid: {name} has {len(images)} images for {len(samples)} samples; "
                         "give one image per sample, in the same order")


def _to_pil(image: object, sample: DetectionSample, where: str) -> Image.Image:
    if not isinstance(image, torch.Tensor) or not image.dtype.is_floating_point:
        got = image.dtype if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"{where}: images must be float tensors (3, H, W) in [0, 1], got {got}")
    width, height = sample.image_size
    if tuple(image.shape) != (3, height, width):
        raise InputError(
            f"{where}: image has shape {tuple(image.shape)} but sample '{sample.image_id}' is {width}x{height}; "
            f"pass images of shape (3, {height}, {width}) so that boxes and pixels agree"
        )
    pixels = image.detach().cpu().float()
    if not bool(torch.isfinite(pixels).all()) or float(pixels.min()) < 0.0 or float(pixels.max()) > 1.0:
        raise InputError(f"{where}: image values must be finite and in [0, 1]; clamp or rescale the image")
    array = (pixels * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def _scaled_size(sample: DetectionSample, max_side: int) -> tuple[int, int]:
    width, height = sample.image_size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _draw_cell(
    image: Image.Image,
    sample: DetectionSample,
    dets: CheckedDetections,
    size: tuple[int, int],
    score_threshold: float,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> Image.Image:
    cell = image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)
    sx, sy = size[0] / sample.image_size[0], size[1] / sample.image_size[1]
    draw = ImageDraw.Draw(cell)

    def scaled(box: list[float]) -> list[float]:
        x0, y0, x1, y1 = box
        return [x0 * sx, y0 * sy, max(x0 * sx, x1 * sx - 1), max(y0 * sy, y1 * sy - 1)]

    for box in sample.boxes.tolist():
        draw.rectangle(scaled(box), outline=GT_COLOUR, width=1)
    keep = dets.scores >= score_threshold
    for box, score, label in zip(dets.boxes[keep].tolist(), dets.scores[keep].tolist(), dets.labels[keep].tolist(),
                                 strict=True):
        colour = DETECTION_COLOURS[label % len(DETECTION_COLOURS)]
        corners = scaled(box)
        draw.rectangle(corners, outline=colour, width=1)
        draw.text((corners[0], max(0.0, corners[1] - 11)), f"{sample.class_names[label]} {score:.2f}",
                  fill=colour, font=font)
    found = match_detections(sample.boxes.detach().cpu(), dets.boxes, dets.scores, 0.5, score_threshold)
    draw.text((2, size[1] - 12), f"found {int(found.sum())}/{len(sample)}", fill=(255, 255, 255), font=font)
    return cell


def write_png(canvas: Image.Image, out: Path) -> None:
    """Write ``canvas`` as PNG at ``out`` atomically (temporary file, then rename)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write the detection grid to '{out}' ({exc}); choose a writable path") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            canvas.save(fh, format="PNG")
        os.replace(tmp_name, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise ConfigError(f"cannot write the detection grid to '{out}' ({exc}); choose a writable path") from exc
        raise


def save_detection_grid(
    samples: Sequence[DetectionSample],
    images_clean: Sequence[torch.Tensor],
    dets_clean: Sequence[Mapping[str, Any]],
    images_adv: Sequence[torch.Tensor],
    dets_adv: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    score_threshold: float = 0.5,
    max_images: int = 8,
    max_side: int = 640,
) -> Path:
    """Write a PNG grid of clean vs patched detections for the first ``max_images`` samples; return its path.

    ``images_clean`` / ``images_adv`` hold one float ``(3, H, W)`` tensor in [0, 1] per sample (a batch tensor
    ``(B, 3, H, W)`` works too), at the sample's own ``image_size``.  ``dets_clean`` / ``dets_adv`` hold one
    detection mapping per sample, in the convention of :mod:`advbench.detection.metrics`.  Only detections with
    ``score >= score_threshold`` are drawn.  The layout is described in the module docstring.  The file is
    written atomically (a temporary file in the same folder, then :func:`os.replace`).
    """
    _, score_threshold = check_thresholds(0.5, score_threshold)
    for name, value in (("max_images", max_images), ("max_side", max_side)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"save_detection_grid: {name} must be a positive integer, got {value!r}")
    clean = check_all_detections(samples, dets_clean, "save_detection_grid", "dets_clean")
    adv = check_all_detections(samples, dets_adv, "save_detection_grid", "dets_adv")
    _check_images(images_clean, samples, "images_clean")
    _check_images(images_adv, samples, "images_adv")

    rows = min(len(samples), max_images)
    sizes = [_scaled_size(samples[i], max_side) for i in range(rows)]
    column = max(w for w, _ in sizes)
    height = TITLE_HEIGHT + sum(h for _, h in sizes) + (rows + 1) * PAD
    canvas = Image.new("RGB", (2 * column + 3 * PAD, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for c, title in enumerate(TITLES):
        left = PAD + c * (column + PAD)
        x = left + max(0.0, (column - draw.textlength(title, font=font)) / 2)
        draw.text((x, 4), title, fill=(255, 255, 255), font=font)

    top = TITLE_HEIGHT + PAD
    for i, size in enumerate(sizes):
        sample = samples[i]
        columns = ((images_clean, clean, "images_clean"), (images_adv, adv, "images_adv"))
        for c, (images, dets, name) in enumerate(columns):
            where = f"save_detection_grid: {name}[{i}] (image '{sample.image_id}')"
            cell = _draw_cell(_to_pil(images[i], sample, where), sample, dets[i], size, score_threshold, font)
            canvas.paste(cell, (PAD + c * (column + PAD), top))
        top += size[1] + PAD
    out = Path(path).expanduser()
    write_png(canvas, out)
    return out
