"""``visdrone:/path``: VisDrone-DET drone images (Zhu, Wen, Du et al., "Detection and Tracking Meet Drones
Challenge", TPAMI 2021).

Layout: ``images/<stem>.jpg`` and ``annotations/<stem>.txt`` with lines
``left,top,width,height,score,category,truncation,occlusion``.  Categories 1..10 (pedestrian .. motor)
become labels 0..9 of :data:`VISDRONE_CLASSES`; category 0 ("ignored regions") and 11 ("others") are
skipped, as in the VisDrone evaluation.  VisDrone has no rotated boxes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from advbench.datasets.catalog import DATASETS
from advbench.datasets.detection.folder import load_label_folder
from advbench.datasets.detection.lines import parse_visdrone_line
from advbench.datasets.detection.sample import DetectionSample
from advbench.task_names import DETECTION

VISDRONE_CLASSES = (
    "pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle", "bus", "motor",
)  # fmt: skip


@DATASETS.register("visdrone", task=DETECTION)
def load_visdrone(
    path: str | Path,
    *,
    classes: Iterable[str | int] | str | None = None,
    clip: bool = False,
) -> list[DetectionSample]:
    """Load a VisDrone-DET folder sorted by image stem; ``classes`` keeps only those boxes, ``clip`` clips them."""
    return load_label_folder(path, dataset="VisDrone", label_dir="annotations", parse_line=parse_visdrone_line,
                             class_names=VISDRONE_CLASSES, classes=classes, clip=clip)
