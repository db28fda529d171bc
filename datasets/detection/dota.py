"""``dota:/path``: DOTA oriented object detection in aerial images (Xia et al., CVPR 2018; Ding et al., TPAMI 2021).

Layout: ``images/<stem>.png`` and ``labelTxt/<stem>.txt``.  A label file may start with the header lines
``imagesource:<name>`` and ``gsd:<metres per pixel or null>``; every other line is
``x1 y1 x2 y2 x3 y3 x4 y4 category difficult``.  Horizontal boxes are the hull of the four corners and
rotated boxes their minimum-area rectangle.  Labels index :data:`DOTA_CLASSES` (the 18 categories of
DOTA-v2.0, whose first 15 are DOTA-v1.0 and first 16 DOTA-v1.5).  Difficult objects are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from advbench.datasets.catalog import DATASETS
from advbench.datasets.detection.folder import load_label_folder
from advbench.datasets.detection.lines import parse_dota_line
from advbench.datasets.detection.sample import DetectionSample
from advbench.task_names import DETECTION

DOTA_CLASSES = (
    "plane", "ship", "storage-tank", "baseball-diamond", "tennis-court", "basketball-court", "ground-track-field",
    "harbor", "bridge", "large-vehicle", "small-vehicle", "helicopter", "roundabout", "soccer-ball-field",
    "swimming-pool", "container-crane", "airport", "helipad",
)  # fmt: skip


def is_dota_header(line: str) -> bool:
    """True for the optional ``imagesource:`` and ``gsd:`` header lines (and blank lines among them)."""
    text = line.strip().lower()
    return not text or text.startswith(("imagesource:", "gsd:"))


@DATASETS.register("dota", task=DETECTION)
def load_dota(
    path: str | Path,
    *,
    classes: Iterable[str | int] | str | None = None,
    clip: bool = False,
) -> list[DetectionSample]:
    """Load a DOTA folder sorted by image stem; ``classes`` keeps only those boxes, ``clip`` clips them to the image."""
    return load_label_folder(path, dataset="DOTA", label_dir="labelTxt", parse_line=parse_dota_line,
                             class_names=DOTA_CLASSES, header=is_dota_header, keep_rotated=True, classes=classes,
                             clip=clip)
