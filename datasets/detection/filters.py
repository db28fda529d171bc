"""Per-box class filtering shared by the detection loaders."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import torch

from advbench.datasets.detection.sample import DetectionSample
from advbench.errors import DatasetError


def class_filter(classes: Iterable[str | int] | str | None, class_names: Sequence[str]) -> set[int] | None:
    """Turn class names (case-insensitive) or ids into label indices; ``None`` means no filter."""
    if classes is None:
        return None
    if isinstance(classes, str | int):
        classes = [classes]
    folded = [n.casefold() for n in class_names]
    keep: set[int] = set()
    for item in classes:
        text = str(item).strip()
        if text.casefold() in folded:
            keep.add(folded.index(text.casefold()))
        elif text.isascii() and text.isdigit() and int(text) < len(class_names):
            keep.add(int(text))
        else:
            known = ", ".join(f"{n} ({i})" for i, n in enumerate(class_names))
            raise DatasetError(f"unknown class '{item}' in the classes filter; known classes: {known}")
    return keep


def keep_classes(sample: DetectionSample, labels: set[int] | None) -> DetectionSample:
    """``sample`` with only the boxes whose label is in ``labels`` (all boxes if ``labels`` is None).

    Images left without boxes are kept: they still count as background for detectors.
    """
    if labels is None:
        return sample
    keep = [i for i, label in enumerate(sample.labels.tolist()) if label in labels]
    if len(keep) == len(sample):
        return sample
    index = torch.tensor(keep, dtype=torch.int64)

    def pick(values: list[str] | None) -> list[str] | None:
        return None if values is None else [values[i] for i in keep]

    rotated = sample.rotated_boxes
    return dataclasses.replace(
        sample,
        boxes=sample.boxes[index],
        labels=sample.labels[index],
        rotated_boxes=None if rotated is None or not keep else rotated[index],
        masks=None if sample.masks is None else sample.masks[index],
        colours=pick(sample.colours),
        types=pick(sample.types),
    )
