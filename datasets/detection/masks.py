"""Instance masks: PNG instance maps and COCO segmentations (polygons or RLE) in, COCO RLE out.

COCO run-length encoding (Lin et al., ECCV 2014) is decoded with ``pycocotools.mask`` after the counts
are checked here in Python: pycocotools' C code trusts its input, and a corrupt RLE string or a polygon
with huge coordinates could crash it or run for a very long time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from advbench.errors import DatasetError


def is_finite_number(value: object) -> bool:
    """True for a finite int or float from JSON (not a bool, not an int too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def instance_map_masks(path: object, n: int, size: tuple[int, int]) -> torch.Tensor:
    """Read a PNG instance map (pixel value ``k`` = box ``k`` counting from 1, 0 = background) as ``(n, H, W)``."""
    try:
        with Image.open(path) as img:
            mode, arr = img.mode, np.asarray(img).astype(np.int64)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read mask file '{path}' ({exc}); fix or delete it") from exc
    if mode not in ("L", "P", "I", "I;16", "1") or arr.ndim != 2:
        raise DatasetError(
            f"mask file '{path}' has mode {mode}; save instance maps as single-channel PNGs whose pixel value k "
            "marks box k (0 = background)"
        )
    if (arr.shape[1], arr.shape[0]) != tuple(size):
        raise DatasetError(
            f"mask file '{path}' is {arr.shape[1]}x{arr.shape[0]} but its image is {size[0]}x{size[1]}; "
            "masks must match the image size"
        )
    top = int(arr.max()) if arr.size else 0
    if top > n:
        raise DatasetError(
            f"mask file '{path}' has instance value {top} but the label file has only {n} boxes; value k must mark "
            "the k-th box line"
        )
    ids = torch.arange(1, n + 1).view(-1, 1, 1)
    return torch.from_numpy(arr).unsqueeze(0) == ids


def counts_from_string(text: str, where: str) -> list[int]:
    """Decode a compressed COCO RLE string into run lengths (a port of pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise DatasetError(f"{where}: RLE counts string is truncated; re-export the mask")
            c = ord(text[pos]) - 48
            if not 0 <= c < 64:
                raise DatasetError(f"{where}: RLE counts string has invalid character {text[pos]!r}")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _check_counts(counts: list[int], h: int, w: int, where: str) -> None:
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise DatasetError(
            f"{where}: RLE run lengths must be non-negative and sum to height*width = {h * w}; re-export the mask"
        )


def segmentation_mask(seg: Any, size: tuple[int, int], where: str) -> np.ndarray:
    """Decode one COCO segmentation (polygon list, uncompressed or compressed RLE) to a bool ``(H, W)`` array.

    Polygon vertices are clamped to the image before rasterising.
    """
    w, h = size
    if isinstance(seg, dict):
        if set(seg) != {"size", "counts"}:
            raise DatasetError(f"{where}: an RLE segmentation needs exactly the keys 'size' and 'counts'")
        if seg["size"] != [h, w]:
            raise DatasetError(f"{where}: RLE size {seg['size']} does not match the image's [height, width] [{h}, {w}]")
        counts = seg["counts"]
        if isinstance(counts, str):
            _check_counts(counts_from_string(counts, where), h, w, where)
            rle = {"size": [h, w], "counts": counts.encode("ascii")}
        elif isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            _check_counts(counts, h, w, where)
            rle = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            raise DatasetError(f"{where}: RLE counts must be a string or a list of integers")
        return coco_mask.decode(rle).astype(bool)
    if not isinstance(seg, list) or not seg:
        raise DatasetError(f"{where}: segmentation must be a non-empty list of polygons or an RLE object")
    polygons = []
    for poly in seg:
        ok = isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
        if not ok or not all(is_finite_number(v) for v in poly):
            raise DatasetError(f"{where}: each polygon must be a list of at least 3 finite x, y pairs")
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2).clip(0, [w, h])
        polygons.append(xy.ravel().tolist())
    rles = coco_mask.frPyObjects(polygons, h, w)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def encode_rle(mask: torch.Tensor) -> dict[str, Any]:
    """Encode a bool ``(H, W)`` mask as a JSON-ready compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    rle = coco_mask.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
