"""The one detection sample every detection loader returns: :class:`DetectionSample`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from advbench.errors import DatasetError


@dataclass(frozen=True, eq=False)
class DetectionSample:
    """One annotated image of a detection data set.

    The image itself stays on disk; :meth:`load_image` reads it.  Per-box fields all have ``N`` rows:

    * ``boxes`` -- float32 ``(N, 4)`` axis-aligned ``x_min, y_min, x_max, y_max`` in pixels.
    * ``labels`` -- int64 ``(N,)`` indices into ``class_names``.
    * ``rotated_boxes`` -- float32 ``(N, 5)`` ``cx, cy, w, h, angle`` (degrees, le90 convention, see
      :mod:`advbench.datasets.detection.geometry`) or ``None`` when the source has no rotated boxes.
    * ``masks`` -- bool ``(N, H, W)`` instance masks or ``None`` (loaders read them only on request).
    * ``colours`` / ``types`` -- one attribute string per box (EVD4UAV, Sun, Guo et al., arXiv 2403.05422)
      or ``None``.

    Per-image fields: ``image_id`` (the file stem unless the source names it), ``image_size`` as
    ``(width, height)``, ``altitude`` (e.g. ``"50m"``) and ``snow`` (``None`` = unknown).
    Construction validates shapes and dtypes, so a loader cannot hand out an inconsistent sample.
    """

    image_id: str
    image_path: Path
    image_size: tuple[int, int]
    boxes: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    rotated_boxes: torch.Tensor | None = None
    masks: torch.Tensor | None = field(default=None, repr=False)
    colours: list[str] | None = None
    types: list[str] | None = None
    altitude: str | None = None
    snow: bool | None = None

    def __post_init__(self) -> None:
        where = f"detection sample '{self.image_id}' ({self.image_path})"
        n = self._check_tensor(where, "boxes", self.boxes, torch.float32, (None, 4))
        self._check_tensor(where, "labels", self.labels, torch.int64, (n,))
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise DatasetError(f"{where}: labels must lie in [0, {len(self.class_names)}) to index class_names")
        if self.rotated_boxes is not None:
            self._check_tensor(where, "rotated_boxes", self.rotated_boxes, torch.float32, (n, 5))
        if self.masks is not None:
            w, h = self.image_size
            self._check_tensor(where, "masks", self.masks, torch.bool, (n, h, w))
        for name in ("colours", "types"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise DatasetError(f"{where}: {name} has {len(values)} entries for {n} boxes; give one per box")
        if self.snow is not None and not isinstance(self.snow, bool):
            raise DatasetError(f"{where}: snow must be True, False or None, got {self.snow!r}")

    @staticmethod
    def _check_tensor(where: str, name: str, t: object, dtype: torch.dtype, shape: tuple[int | None, ...]) -> int:
        if not isinstance(t, torch.Tensor) or t.dtype != dtype:
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise DatasetError(f"{where}: {name} must be a {dtype} tensor, got {got}")
        if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape, strict=True)):
            want = "x".join("N" if s is None else str(s) for s in shape)
            raise DatasetError(f"{where}: {name} must have shape ({want}), got {tuple(t.shape)}")
        return int(t.shape[0])

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def load_image(self) -> torch.Tensor:
        """Read the image as a float32 ``(3, H, W)`` RGB tensor in [0, 1] (grayscale is expanded to RGB)."""
        try:
            with Image.open(self.image_path) as img:
                arr = np.asarray(img.convert("RGB"), dtype=np.float32)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"cannot read image file '{self.image_path}' ({exc}); fix or delete it") from exc
        if (arr.shape[1], arr.shape[0]) != tuple(self.image_size):
            raise DatasetError(
                f"image file '{self.image_path}' is {arr.shape[1]}x{arr.shape[0]} but its annotations say "
                f"{self.image_size[0]}x{self.image_size[1]}; the file changed since loading, reload the data set"
            )
        return torch.from_numpy(arr.transpose(2, 0, 1) / 255.0).contiguous()
