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

from advbench.datasets.detection.catalog import DETECTION_DATASETS
from advbench.datasets.detection.files import image_index, image_size, label_files, parse_label_file, require_dir
from advbench.datasets.detection.filters import class_filter, keep_classes
from advbench.datasets.detection.lines import parse_visdrone_line
from advbench.datasets.detection.records import check_in_image, stack_records
from advbench.datasets.detection.sample import DetectionSample

VISDRONE_CLASSES = (
    "pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle", "bus", "motor",
)  # fmt: skip


@DETECTION_DATASETS.register("visdrone")
def load_visdrone(
    path: str | Path,
    *,
    classes: Iterable[str | int] | str | None = None,
    clip: bool = False,
) -> list[DetectionSample]:
    """Load a VisDrone-DET folder sorted by image stem; ``classes`` keeps only those boxes, ``clip`` clips them."""
    root = require_dir(Path(path).expanduser(), "give the VisDrone folder that holds images/ and annotations/")
    images = image_index(require_dir(root / "images", f"put the images of '{root}' in an images/ folder"))
    labels = label_files(require_dir(root / "annotations", f"put the label files of '{root}' in annotations/"), images)
    keep = class_filter(classes, VISDRONE_CLASSES)
    samples = []
    for stem, image_path in images.items():
        size = image_size(image_path)
        records = []
        if stem in labels:
            parsed = parse_label_file(labels[stem], parse_visdrone_line, VISDRONE_CLASSES)
            records = [check_in_image(r, size, clip=clip) for r in parsed]
        boxes, label_t, _ = stack_records(records)
        samples.append(keep_classes(DetectionSample(stem, image_path, size, boxes, label_t, VISDRONE_CLASSES), keep))
    return samples
