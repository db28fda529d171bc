"""Counts that describe a detection data set, for ``advbench data inspect``: :func:`inspect_dataset`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from advbench.datasets.detection.sample import DetectionSample

NONE = "(none)"


def _sorted(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items()))


def inspect_dataset(samples: Sequence[DetectionSample]) -> dict[str, Any]:
    """Summarise samples as a JSON-ready dict.

    Keys: ``images``, ``boxes``, ``classes`` (boxes per class name), ``altitudes`` (images and boxes per
    altitude), ``snow`` (images per flag), ``colours`` and ``types`` (boxes per attribute; boxes without
    attributes count as ``"(none)"``), ``image_sizes`` (images per ``"WxH"``), ``boxes_per_image``
    (min/mean/max) and the number of images with ``rotated_boxes`` and with ``masks``.
    """
    classes: Counter[str] = Counter()
    alt_images: Counter[str] = Counter()
    alt_boxes: Counter[str] = Counter()
    snow: Counter[str] = Counter()
    colours: Counter[str] = Counter()
    types: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    per_image = [len(s) for s in samples]
    for s in samples:
        classes.update(s.class_names[i] for i in s.labels.tolist())
        altitude = s.altitude or NONE
        alt_images[altitude] += 1
        alt_boxes[altitude] += len(s)
        snow[NONE if s.snow is None else ("snow" if s.snow else "no snow")] += 1
        colours.update(s.colours if s.colours is not None else [NONE] * len(s))
        types.update(s.types if s.types is not None else [NONE] * len(s))
        sizes[f"{s.image_size[0]}x{s.image_size[1]}"] += 1
    return {
        "images": len(samples),
        "boxes": sum(per_image),
        "classes": _sorted(classes),
        "altitudes": {a: {"images": alt_images[a], "boxes": alt_boxes[a]} for a in sorted(alt_images)},
        "snow": _sorted(snow),
        "colours": _sorted(colours),
        "types": _sorted(types),
        "image_sizes": _sorted(sizes),
        "boxes_per_image": {
            "min": min(per_image, default=0),
            "mean": sum(per_image) / len(per_image) if per_image else 0.0,
            "max": max(per_image, default=0),
        },
        "with_rotated_boxes": sum(s.rotated_boxes is not None for s in samples),
        "with_masks": sum(s.masks is not None for s in samples),
    }
