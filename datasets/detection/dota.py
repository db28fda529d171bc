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

from advbench.datasets.detection.catalog import DETECTION_DATASETS
from advbench.datasets.detection.files import image_index, image_size, label_files, parse_label_file, require_dir
from advbench.datasets.detection.filters import class_filter, keep_classes
from advbench.datasets.detection.lines import parse_dota_line
from advbench.datasets.detection.records import check_in_image, stack_records
from advbench.datasets.detection.sample import DetectionSample

DOTA_CLASSES = (
    "plane", "ship", "storage-tank", "baseball-diamond", "tennis-court", "basketball-court", "ground-track-field",
    "harbor", "bridge", "large-vehicle", "small-vehicle", "helicopter", "roundabout", "soccer-ball-field",
    "swimming-pool", "container-crane", "airport", "helipad",
)  # fmt: skip


def is_dota_header(line: str) -> bool:
    """True for the optional ``imagesource:`` and ``gsd:`` header lines (and blank lines among them)."""
    text = line.strip().lower()
    return not text or text.startswith(("imagesource:", "gsd:"))


@DETECTION_DATASETS.register("dota")
def load_dota(
    path: str | Path,
    *,
    classes: Iterable[str | int] | str | None = None,
    clip: bool = False,
) -> list[DetectionSample]:
    """Load a DOTA folder sorted by image stem; ``classes`` keeps only those boxes, ``clip`` clips them to the image."""
    root = require_dir(Path(path).expanduser(), "give the DOTA folder that holds images/ and labelTxt/")
    images = image_index(require_dir(root / "images", f"put the images of '{root}' in an images/ folder"))
    labels = label_files(require_dir(root / "labelTxt", f"put the label files of '{root}' in labelTxt/"), images)
    keep = class_filter(classes, DOTA_CLASSES)
    samples = []
    for stem, image_path in images.items():
        size = image_size(image_path)
        records = []
        if stem in labels:
            parsed = parse_label_file(labels[stem], parse_dota_line, DOTA_CLASSES, header=is_dota_header)
            records = [check_in_image(r, size, clip=clip) for r in parsed]
        boxes, label_t, rotated = stack_records(records)
        sample = DetectionSample(stem, image_path, size, boxes, label_t, DOTA_CLASSES, rotated_boxes=rotated)
        samples.append(keep_classes(sample, keep))
    return samples
