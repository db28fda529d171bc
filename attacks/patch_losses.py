"""The patch attack objective: detection score + 0.01 · NPS + TV (Thys et al., CVPRW 2019).

* :func:`vehicle_scores` -- for every attacked vehicle, the highest score among the detector's candidates
  that overlap it (IoU >= ``match_iou``): class score or objectness.  Minimising the mean of these hides
  every patched vehicle; ``reduction="image"`` instead takes Thys's single maximum over the whole image.
* :func:`non_printability` -- Sharif et al. (CCS 2016): how far each patch pixel is from the nearest colour
  a printer can reproduce, averaged over pixels.
* :func:`total_variation` -- mean absolute difference of neighbouring pixels, which keeps the patch smooth
  enough to survive printing and the camera's blur.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from advbench.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    from advbench.models.detectors import Candidates

#: The default printable palette: a 4-level grid over the gamut a consumer printer reaches, [0.1, 0.9]
#: per channel (a stand-in for a measured palette; pass your own with :func:`load_palette`).
DEFAULT_PALETTE = torch.cartesian_prod(*([torch.linspace(0.1, 0.9, 4)] * 3))

SCORE_KINDS = ("class", "objectness")
REDUCTIONS = ("vehicle", "image")


def vehicle_scores(cands: Sequence[Candidates], targets: Sequence[torch.Tensor], *, kind: str = "class",
                   match_iou: float = 0.3, reduction: str = "vehicle") -> list[torch.Tensor]:
    """Per image, the score the attack minimises for each target box (xyxy), or one image-level maximum.

    Returns a list with one tensor per image: (N_i,) for ``reduction="vehicle"`` (0 where no candidate
    overlaps a vehicle) or (1,) for ``reduction="image"``.
    """
    if kind not in SCORE_KINDS:
        raise ConfigError(f"unknown score kind '{kind}'; choose one of {', '.join(SCORE_KINDS)}")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"unknown reduction '{reduction}'; choose one of {', '.join(REDUCTIONS)}")
    out = []
    for cand, boxes in zip(cands, targets, strict=True):
        if kind == "class":
            cboxes, scores = cand.boxes, cand.scores
        else:
            cboxes, scores = cand.objectness_boxes, cand.objectness
        if reduction == "image":
            out.append(scores.amax().reshape(1) if scores.numel() else scores.new_zeros(1))
            continue
        if boxes.numel() == 0 or scores.numel() == 0:
            out.append(scores.new_zeros(boxes.shape[0]))
            continue
        from torchvision.ops import box_iou  # imported on first use: torchvision is slow to import

        overlap = box_iou(boxes.to(cboxes), cboxes) >= match_iou  # (N, M)
        masked = torch.where(overlap, scores.unsqueeze(0), scores.new_zeros(()))
        out.append(masked.amax(dim=1))
    return out


def non_printability(patch: torch.Tensor, palette: torch.Tensor = DEFAULT_PALETTE) -> torch.Tensor:
    """Mean over pixels of the Euclidean distance from the patch colour to the nearest palette colour."""
    pixels = patch.reshape(3, -1).t()  # (P*Q, 3)
    squared = (pixels[:, None, :] - palette.to(pixels)[None]).pow(2).sum(dim=-1)  # (P*Q, colours)
    return squared.amin(dim=1).add(1e-12).sqrt().mean()  # eps: a finite gradient on a palette colour


def total_variation(patch: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally and vertically neighbouring pixels of (3, P, Q)."""
    dx = (patch[:, :, 1:] - patch[:, :, :-1]).abs().mean()
    dy = (patch[:, 1:, :] - patch[:, :-1, :]).abs().mean()
    return dx + dy


def load_palette(path: str | Path) -> torch.Tensor:
    """Read a printable palette: one ``r,g,b`` (or whitespace-separated) triplet per line, in [0,1] or 0-255."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].replace(",", " ").split()
        if not text:
            continue
        if len(text) != 3:
            raise DatasetError(f"{path}:{lineno}: a palette line needs 3 values r g b, got {len(text)}")
        try:
            rows.append([float(t) for t in text])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: palette values must be numbers, got {line.strip()!r}") from None
    if not rows:
        raise DatasetError(f"{path}: the palette is empty; give one r,g,b triplet per line")
    palette = torch.tensor(rows)
    if palette.max() > 1:
        palette = palette / 255.0
    if palette.min() < 0 or palette.max() > 1:
        raise DatasetError(f"{path}: palette values must lie in [0, 1] or [0, 255]")
    return palette
