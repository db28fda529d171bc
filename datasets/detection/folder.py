"""The shared walk of ``images/`` + one-text-file-per-image label folders (DOTA, VisDrone)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from advbench.datasets.detection.files import image_index, image_size, label_files, parse_label_file, require_dir
from advbench.datasets.detection.filters import class_filter, keep_classes
from advbench.datasets.detection.records import check_in_image, stack_records
from advbench.datasets.detection.sample import DetectionSample


def load_label_folder(
    path: str | Path,
    *,
    dataset: str,
    label_dir: str,
    parse_line: Callable,
    class_names: tuple[str, ...],
    header: Callable[[str], bool] | None = None,
    keep_rotated: bool = False,
    classes: Iterable[str | int] | str | None = None,
    clip: bool = False,
) -> list[DetectionSample]:
    """Samples sorted by image stem from ``<path>/images`` and ``<path>/<label_dir>/<stem>.txt``; an image
    without a label file has no boxes.  ``classes`` keeps only those boxes, ``clip`` clips them to the image."""
    root = require_dir(Path(path).expanduser(), f"give the {dataset} folder that holds images/ and {label_dir}/")
    images = image_index(require_dir(root / "images", f"put the images of '{root}' in an images/ folder"))
    labels = label_files(require_dir(root / label_dir, f"put the label files of '{root}' in {label_dir}/"), images)
    keep = class_filter(classes, class_names)
    samples = []
    for stem, image_path in images.items():
        size = image_size(image_path)
        records = []
        if stem in labels:
            kwargs = {"header": header} if header is not None else {}
            parsed = parse_label_file(labels[stem], parse_line, class_names, **kwargs)
            records = [check_in_image(r, size, clip=clip) for r in parsed]
        boxes, label_t, rotated = stack_records(records)
        sample = DetectionSample(stem, image_path, size, boxes, label_t, class_names,
                                 rotated_boxes=rotated if keep_rotated else None)
        samples.append(keep_classes(sample, keep))
    return samples
