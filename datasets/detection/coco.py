"""``coco:/path/to/annotations.json``: COCO-format detection annotations (Lin et al., "Microsoft COCO", ECCV 2014).

``bbox`` is ``[x, y, width, height]`` in pixels; ``segmentation`` is a list of polygons or an RLE object
(decoded only with ``masks=True``).  Images are found at ``file_name`` relative to the JSON's folder,
else in an ``images/`` folder next to the JSON, else in an ``images/`` folder next to the JSON's folder.
Labels are the positions of the category ids in sorted order, so COCO's ids 1..90 become 0..79.
Crowd annotations (``iscrowd: 1``) are skipped.  Samples keep the file's image order.

The extra keys written by :func:`~advbench.datasets.detection.export.export_coco` are read back: on
images ``image_key`` (the sample's ``image_id``; else the file name's stem), ``altitude`` and ``snow``;
on annotations ``rotated_bbox`` ``[cx, cy, w, h, angle]`` and ``attributes`` ``{"colour", "type"}``.
JSON has no line numbers to quote, so errors name the file and the entry's index and id.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advbench.datasets.catalog import DATASETS
from advbench.datasets.detection.files import image_size, load_json
from advbench.datasets.detection.filters import class_filter, keep_classes
from advbench.datasets.detection.geometry import canonical_rbox
from advbench.datasets.detection.masks import is_finite_number, segmentation_mask
from advbench.datasets.detection.records import BoxRecord, check_in_image, stack_records
from advbench.datasets.detection.sample import DetectionSample
from advbench.errors import DatasetError, MissingPathError
from advbench.task_names import DETECTION


def _list_of_dicts(data: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    value = data.get(key, [] if key == "annotations" else None)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DatasetError(f"'{path}': '{key}' must be a list of objects; is this a COCO annotation file?")
    return value


def _int_field(entry: dict[str, Any], key: str, where: str) -> int:
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DatasetError(f"{where}: '{key}' must be an integer, got {value!r}")
    return value


def _numbers(value: Any, n: int, key: str, where: str) -> list[float]:
    if not isinstance(value, list) or len(value) != n or not all(is_finite_number(v) for v in value):
        raise DatasetError(f"{where}: '{key}' must be a list of {n} finite numbers, got {value!r}")
    return [float(v) for v in value]


def _categories(entries: list[dict[str, Any]], path: Path) -> tuple[tuple[str, ...], dict[int, int]]:
    """Class names in category-id order and the map category id -> label."""
    named: dict[int, str] = {}
    for i, entry in enumerate(entries):
        where = f"'{path}' category {i}"
        cid, name = _int_field(entry, "id", where), entry.get("name")
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{where}: 'name' must be a non-empty string, got {name!r}")
        if cid in named:
            raise DatasetError(f"{where}: category id {cid} is used twice; give each category its own id")
        named[cid] = name
    ids = sorted(named)
    return tuple(named[c] for c in ids), {c: i for i, c in enumerate(ids)}


def _resolve_image(path: Path, file_name: Any, where: str) -> Path:
    if not isinstance(file_name, str) or not file_name:
        raise DatasetError(f"{where}: 'file_name' must be a non-empty string, got {file_name!r}")
    base = path.parent
    for folder in (base, base / "images", base.parent / "images"):
        if (folder / file_name).is_file():
            return folder / file_name
    raise DatasetError(
        f"{where}: image '{file_name}' not found in '{base}', '{base / 'images'}' or '{base.parent / 'images'}'; "
        "add the image or fix its file_name"
    )


def _record(ann: dict[str, Any], cat_index: dict[int, int], where: str) -> BoxRecord:
    cid = _int_field(ann, "category_id", where)
    if cid not in cat_index:
        raise DatasetError(f"{where}: category_id {cid} is not in 'categories' (ids {sorted(cat_index)})")
    x, y, w, h = _numbers(ann.get("bbox"), 4, "bbox", where)
    rbox = None
    if ann.get("rotated_bbox") is not None:
        rbox = canonical_rbox(*_numbers(ann["rotated_bbox"], 5, "rotated_bbox", where))
    return BoxRecord(cat_index[cid], (x, y, x + w, y + h), rbox, where)


def _attributes(anns: list[tuple[str, dict[str, Any]]], key: str) -> list[str] | None:
    values = [a.get("attributes", {}).get(key) if isinstance(a.get("attributes"), dict) else None for _, a in anns]
    return values if values and all(isinstance(v, str) for v in values) else None


def _masks(anns: list[tuple[str, dict[str, Any]]], size: tuple[int, int]) -> torch.Tensor | None:
    segs = [(where, a.get("segmentation")) for where, a in anns]
    if not segs or any(s is None or s == [] for _, s in segs):
        return None
    return torch.from_numpy(np.stack([segmentation_mask(s, size, where) for where, s in segs]))


@DATASETS.register("coco", task=DETECTION)
def load_coco(
    path: str | Path,
    *,
    classes: Iterable[str | int] | str | None = None,
    masks: bool = False,
    clip: bool = False,
) -> list[DetectionSample]:
    """Load a COCO annotation file (see the module docstring); ``masks=True`` decodes segmentations.

    An image gets masks only if every one of its annotations has a segmentation.
    """
    json_path = Path(path).expanduser()
    if not json_path.is_file():
        raise MissingPathError(f"COCO annotation file '{json_path}' does not exist; give the path of the .json file")
    data = load_json(json_path)
    if not isinstance(data, dict):
        raise DatasetError(f"'{json_path}': expected a JSON object with 'images', 'annotations' and 'categories'")
    class_names, cat_index = _categories(_list_of_dicts(data, "categories", json_path), json_path)
    keep = class_filter(classes, class_names)
    images = _list_of_dicts(data, "images", json_path)
    by_image: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for i, entry in enumerate(images):
        image_id = _int_field(entry, "id", f"'{json_path}' image {i}")
        if image_id in by_image:
            raise DatasetError(f"'{json_path}' image {i}: image id {image_id} is used twice; give each its own id")
        by_image[image_id] = []
    for i, ann in enumerate(_list_of_dicts(data, "annotations", json_path)):
        where = f"'{json_path}' annotation {i} (id {ann.get('id')!r})"
        image_id = _int_field(ann, "image_id", where)
        if image_id not in by_image:
            raise DatasetError(f"{where}: image_id {image_id} is not in 'images'; add the image or drop the annotation")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise DatasetError(f"{where}: 'iscrowd' must be 0 or 1, got {ann.get('iscrowd')!r}")
        if ann.get("iscrowd", 0) == 0:
            by_image[image_id].append((where, ann))
    samples = []
    for i, entry in enumerate(images):
        where = f"'{json_path}' image {i} (id {entry['id']})"
        image_path = _resolve_image(json_path, entry.get("file_name"), where)
        size = image_size(image_path)
        if (entry.get("width", size[0]), entry.get("height", size[1])) != size:
            raise DatasetError(
                f"{where}: width x height {entry.get('width')}x{entry.get('height')} disagrees with the image file "
                f"'{image_path}' ({size[0]}x{size[1]}); fix the entry"
            )
        anns = by_image[entry["id"]]
        records = [check_in_image(_record(a, cat_index, w), size, clip=clip) for w, a in anns]
        boxes, labels, rotated = stack_records(records)
        snow = entry.get("snow")
        altitude = entry.get("altitude")
        key = entry.get("image_key")
        sample = DetectionSample(
            image_id=key if isinstance(key, str) and key else image_path.stem,
            image_path=image_path,
            image_size=size,
            boxes=boxes,
            labels=labels,
            class_names=class_names,
            rotated_boxes=rotated,
            masks=_masks(anns, size) if masks else None,
            colours=_attributes(anns, "colour"),
            types=_attributes(anns, "type"),
            altitude=altitude if isinstance(altitude, str) else None,
            snow=snow if isinstance(snow, bool) else None,
        )
        samples.append(keep_classes(sample, keep))
    return samples
