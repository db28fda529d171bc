"""Write detection samples as one COCO JSON file (Lin et al., ECCV 2014): :func:`export_coco`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from advbench.datasets.detection.masks import encode_rle
from advbench.datasets.detection.sample import DetectionSample
from advbench.errors import DatasetError
from advbench.io import atomic_write_text


def _file_name(image: Path, out_dir: Path) -> str:
    """The image path relative to the JSON's folder when it lies inside it, else absolute."""
    image, out_dir = image.resolve(), out_dir.resolve()
    return image.relative_to(out_dir).as_posix() if image.is_relative_to(out_dir) else image.as_posix()


def _image_entry(sample: DetectionSample, image_id: int, out_dir: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": image_id,
        "file_name": _file_name(Path(sample.image_path), out_dir),
        "width": sample.image_size[0],
        "height": sample.image_size[1],
        "image_key": sample.image_id,
    }
    if sample.altitude is not None:
        entry["altitude"] = sample.altitude
    if sample.snow is not None:
        entry["snow"] = sample.snow
    return entry


def _annotations(sample: DetectionSample, image_id: int, first_id: int) -> list[dict[str, Any]]:
    out = []
    for i, ((x0, y0, x1, y1), label) in enumerate(zip(sample.boxes.tolist(), sample.labels.tolist(), strict=True)):
        w, h = x1 - x0, y1 - y0
        ann: dict[str, Any] = {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": label + 1,
            "bbox": [x0, y0, w, h],
            "area": w * h,
            "iscrowd": 0,
        }
        if sample.masks is not None:
            ann["segmentation"] = encode_rle(sample.masks[i])
            ann["area"] = int(sample.masks[i].sum())
        if sample.rotated_boxes is not None:
            ann["rotated_bbox"] = sample.rotated_boxes[i].tolist()
        attributes = {k: v[i] for k, v in (("colour", sample.colours), ("type", sample.types)) if v is not None}
        if attributes:
            ann["attributes"] = attributes
        out.append(ann)
    return out


def export_coco(
    samples: Sequence[DetectionSample], out_path: str | os.PathLike[str], categories: Sequence[str] | None = None
) -> Path:
    """Write ``samples`` to ``out_path`` as COCO JSON, atomically (a temp file renamed into place).

    ``categories`` names the labels (default: the samples' ``class_names``); category ids are
    ``label + 1``.  Boxes become ``bbox`` ``[x, y, w, h]`` with their ``area`` (the mask's pixel count when
    masks exist) and ``iscrowd: 0``; masks become compressed-RLE ``segmentation``.  Extra keys keep what
    COCO has no field for: ``image_key``, ``altitude`` and ``snow`` on images, ``rotated_bbox`` and
    ``attributes`` (colour, type) on annotations.  Image ``file_name`` is relative to the JSON's folder
    when the image lies inside it, else absolute.  Returns the path written.
    """
    out = Path(out_path).expanduser()
    if categories is None:
        if not samples:
            raise DatasetError("export_coco needs categories=[...] when there are no samples to take them from")
        categories = samples[0].class_names
    names = [str(c) for c in categories]
    images, annotations = [], []
    for index, sample in enumerate(samples):
        if len(sample) and int(sample.labels.max()) >= len(names):
            raise DatasetError(
                f"sample '{sample.image_id}' has label {int(sample.labels.max())} but only {len(names)} categories "
                "were given; pass one category name per label"
            )
        images.append(_image_entry(sample, index + 1, out.parent))
        annotations.extend(_annotations(sample, index + 1, len(annotations) + 1))
    document = {
        "info": {"description": "exported by advbench.datasets.detection.export_coco"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    atomic_write_text(out, json.dumps(document))
    return out
