"""Seeded augmentation of detection samples that keeps every annotation in step with the image.

Built on albumentations (Buslaev et al., *Information* 2020).  Axis-aligned boxes go through albumentations'
box targets (``pascal_voc`` pixels); rotated boxes travel as their four corner points on the keypoint target
and are fitted again with :func:`~advbench.datasets.detection.geometry.min_area_rect` afterwards; instance
masks go through the mask target with nearest-neighbour interpolation.  A box that leaves the image (less
than ``min_visibility`` of it left, or less than ``min_area`` square pixels) is dropped from *every* per-box
field at once: boxes, labels, rotated boxes, masks, colours and types.

>>> out = augment_sample(sample, sample.load_image(), "aerial", seed=epoch * 100_000 + index)  # doctest: +SKIP
>>> loss = detector([out.image], [out.target()])  # doctest: +SKIP

Presets (see :data:`DETECTION_AUGMENTATIONS`, add your own with ``@DETECTION_AUGMENTATIONS.register(...)``)
suit top-view images, which have no "up": mirror images and quarter turns are as plausible as the
original.  None of them shifts hue, because EVD4UAV's colour attributes (Sun, Guo et al., arXiv 2403.05422)
are labels that must stay true.

* ``none`` -- identity (a baseline that still runs the whole annotation path).
* ``flip`` -- horizontal and vertical flips, each with probability 1/2.
* ``dihedral`` -- one of the 8 symmetries of the square, uniformly: a horizontal flip with probability 1/2,
  then a quarter turn by 0, 90, 180 or 270 degrees.  Quarter turns swap width and height.
* ``photometric`` -- brightness/contrast (up to 20%) and gamma changes; the geometry is untouched.
* ``aerial`` -- ``dihedral``, a small zoom (scale 0.8-1.2, black border, probability 1/2) and
  brightness/contrast changes.  Zooming in can push boxes out of the image, which are then dropped.

Seeding: albumentations 2.x seeds each transform of a ``Compose`` with the *same* seed, so with
``Compose(..., seed=s)`` two transforms of equal probability fire together (a horizontal and a vertical
flip both happen or neither does).  :func:`augment_sample` therefore gives the whole pipeline one shared
numpy/Python generator seeded with ``seed`` on every call, so the output depends on ``(sample, image,
pipeline, seed)`` only -- not on earlier calls -- and the transforms draw independent numbers.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from advbench.datasets.detection.geometry import clip_polygon, min_area_rect, polygon_area, rbox_corners
from advbench.datasets.detection.sample import DetectionSample
from advbench.errors import ConfigError, InputError
from advbench.registry import Registry

if TYPE_CHECKING:
    import albumentations

#: A preset: a factory that returns fresh albumentations transforms (wrapped by :func:`detection_pipeline`).
AugmentationFactory = Callable[[], list[Any]]

#: Preset name -> factory.  Register new presets with ``@DETECTION_AUGMENTATIONS.register("name")``.
DETECTION_AUGMENTATIONS: Registry[AugmentationFactory] = Registry("detection augmentation")

_BOX_FIELD = "box_index"
_CORNER_FIELD = "corner_index"


def _albumentations() -> ModuleType:
    """Import albumentations lazily, with its online version check off (advbench never touches the network)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


@DETECTION_AUGMENTATIONS.register("none")
def _preset_none() -> list[Any]:
    return []


@DETECTION_AUGMENTATIONS.register("flip")
def _preset_flip() -> list[Any]:
    A = _albumentations()
    return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]


@DETECTION_AUGMENTATIONS.register("dihedral")
def _preset_dihedral() -> list[Any]:
    A = _albumentations()
    # a flip with probability 1/2 followed by a uniform quarter turn is uniform over the dihedral group D4
    return [A.HorizontalFlip(p=0.5), A.RandomRotate90(p=1.0)]


@DETECTION_AUGMENTATIONS.register("photometric")
def _preset_photometric() -> list[Any]:
    A = _albumentations()
    return [
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.8),
        A.RandomGamma(gamma_limit=(80, 120), p=0.3),
    ]


@DETECTION_AUGMENTATIONS.register("aerial")
def _preset_aerial() -> list[Any]:
    import cv2

    A = _albumentations()
    return [
        *_preset_dihedral(),
        A.Affine(scale=(0.8, 1.2), keep_ratio=True, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
    ]


def list_detection_augmentations(pattern: str | None = None) -> list[str]:
    """Names of the registered augmentation presets, optionally filtered by a wildcard such as ``'*flip*'``."""
    return DETECTION_AUGMENTATIONS.names(pattern)


def detection_pipeline(
    transforms: str | Sequence[Any] = "aerial", *, min_visibility: float = 0.3, min_area: float = 4.0
) -> albumentations.Compose:
    """An albumentations pipeline that :func:`augment_sample` can run on detection samples.

    ``transforms`` is a preset name (see :func:`list_detection_augmentations`) or a list of albumentations
    transforms.  Boxes are ``pascal_voc`` pixels, clipped to the image on entry; after the transforms a box
    is kept when at least ``min_visibility`` of its (transformed) area and at least ``min_area`` square
    pixels remain inside the image.  Rotated boxes ride along as keypoints that are never removed, so
    :func:`augment_sample` can apply the same visibility rule to the rotated polygon.  Masks use
    nearest-neighbour interpolation.  The pipeline's own seed is fixed (0); :func:`augment_sample`
    reseeds it on every call.
    """
    import cv2

    A = _albumentations()
    if not 0.0 <= float(min_visibility) <= 1.0:
        raise ConfigError(f"min_visibility must lie in [0, 1], got {min_visibility!r}")
    if not float(min_area) >= 0.0:
        raise ConfigError(f"min_area must be a non-negative number of square pixels, got {min_area!r}")
    if isinstance(transforms, str):
        steps = DETECTION_AUGMENTATIONS.get(transforms)()
    else:
        steps = list(transforms)
        bad = [type(t).__name__ for t in steps if not isinstance(t, A.BasicTransform | A.BaseCompose)]
        if bad:
            raise ConfigError(f"detection_pipeline needs albumentations transforms, got {', '.join(bad)}")
    with warnings.catch_warnings():  # presets without geometric transforms ("photometric") are fine
        warnings.filterwarnings("ignore", message="Got processor for", category=UserWarning)
        return A.Compose(
            steps,
            bbox_params=A.BboxParams(
                format="pascal_voc",
                label_fields=[_BOX_FIELD],
                min_visibility=float(min_visibility),
                min_area=float(min_area),
                clip=True,
                filter_invalid_bboxes=True,
            ),
            keypoint_params=A.KeypointParams(format="xy", label_fields=[_CORNER_FIELD], remove_invisible=False),
            mask_interpolation=cv2.INTER_NEAREST,
            seed=0,
        )


@dataclass(frozen=True, eq=False)
class AugmentedSample:
    """An augmented image with the annotations that survived, all in the augmented image's pixels.

    ``image`` is float32 ``(3, H, W)`` in [0, 1]; the per-box fields have the meaning (and ``N`` rows) of
    :class:`DetectionSample`'s, and ``source_index`` (int64 ``(N,)``) gives each kept box's row in the
    original sample.  Per-image fields (``image_id``, ``class_names``, ``altitude``, ``snow``) are copied.
    :meth:`target` gives the dict a torchvision detector's training step takes.
    """

    image_id: str
    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    source_index: torch.Tensor
    rotated_boxes: torch.Tensor | None = None
    masks: torch.Tensor | None = field(default=None, repr=False)
    colours: list[str] | None = None
    types: list[str] | None = None
    altitude: str | None = None
    snow: bool | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the augmented image (quarter turns swap them)."""
        return int(self.image.shape[2]), int(self.image.shape[1])

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def target(self) -> dict[str, torch.Tensor]:
        """The torchvision detection target: ``boxes`` (float32 xyxy), ``labels`` (int64) and, when present,
        ``masks`` (uint8 ``(N, H, W)``) and ``rotated_boxes`` (float32 ``(N, 5)``, for oriented detectors).

        Labels are the data set's class indices; add 1 if the detector keeps 0 for background.
        """
        out = {"boxes": self.boxes, "labels": self.labels}
        if self.masks is not None:
            out["masks"] = self.masks.to(torch.uint8)
        if self.rotated_boxes is not None:
            out["rotated_boxes"] = self.rotated_boxes
        return out


def _check_pipeline(pipeline: Any) -> None:
    """Refuse pipelines whose box/keypoint set-up :func:`augment_sample` cannot rely on."""
    A = _albumentations()
    processors = getattr(pipeline, "processors", None) or {}
    boxes, points = processors.get("bboxes"), processors.get("keypoints")
    ok = (
        isinstance(pipeline, A.Compose)
        and boxes is not None
        and points is not None
        and boxes.params.format == "pascal_voc"
        and list(boxes.params.label_fields or []) == [_BOX_FIELD]
        and points.params.format == "xy"
        and list(points.params.label_fields or []) == [_CORNER_FIELD]
        and not points.params.remove_invisible
    )
    if not ok:
        raise ConfigError(
            f"augment_sample needs a pipeline built by detection_pipeline(...) or a preset name, got "
            f"{type(pipeline).__name__}; wrap your transforms with detection_pipeline([...])"
        )


def _image_array(sample: DetectionSample, image: torch.Tensor | None) -> np.ndarray:
    """``image`` (or the sample's file) as a contiguous HWC float32 array, checked against the annotations."""
    if image is None:
        image = sample.load_image()
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        got = f"{image.dtype} tensor of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image)
        raise InputError(f"augment_sample needs a float (C, H, W) image tensor, got a {got}")
    width, height = sample.image_size
    if (int(image.shape[2]), int(image.shape[1])) != (width, height):
        raise InputError(
            f"image is {image.shape[2]}x{image.shape[1]} but sample '{sample.image_id}' is annotated as "
            f"{width}x{height}; pass the sample's own image (sample.load_image())"
        )
    if image.numel() and (float(image.min()) < 0.0 or float(image.max()) > 1.0):
        raise InputError("augment_sample needs image values in [0, 1]; un-normalise the image first")
    return np.ascontiguousarray(image.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy())


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _rotated_after(
    corners: np.ndarray, kept: np.ndarray, size: tuple[int, int], min_visibility: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fit rotated boxes to the transformed corners of the ``kept`` boxes, clipped to the image.

    Returns the boxes ``(M, 5)`` and a bool mask over ``kept`` of the boxes whose visible polygon keeps at
    least ``min_visibility`` of its area (and is not degenerate).
    """
    width, height = size
    rows, keep = [], np.zeros(len(kept), dtype=bool)
    for j, i in enumerate(kept.tolist()):
        polygon = corners[i]
        full = polygon_area(polygon)
        visible = clip_polygon(polygon, width, height)
        area = polygon_area(visible)
        if not (full > 0.0 and area > 0.0 and area >= min_visibility * full):
            continue
        box = min_area_rect(visible)
        if box[2] > 0.0 and box[3] > 0.0 and all(np.isfinite(box)):
            rows.append(box)
            keep[j] = True
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5), keep


def augment_sample(
    sample: DetectionSample,
    image: torch.Tensor | None = None,
    pipeline: str | albumentations.Compose = "aerial",
    *,
    seed: int,
) -> AugmentedSample:
    """Augment ``sample`` and its ``image`` (float ``(3, H, W)`` in [0, 1]; ``None`` reads the file) with ``pipeline``.

    ``pipeline`` is a preset name or a pipeline from :func:`detection_pipeline`.  The same ``seed`` always
    gives the same result; derive it from the epoch and the sample's index for fresh but replayable draws.
    Boxes follow the image exactly; rotated boxes are refitted to their transformed corners, clipped to the
    image first (a box cut by the border becomes the minimum-area rectangle of its visible part); masks move
    with their boxes.  Boxes that leave the image are dropped from every per-box field together.
    Raises :class:`~advbench.errors.ConfigError` for a bad pipeline or seed and
    :class:`~advbench.errors.InputError` for an image that does not fit the sample.
    """
    seed = _check_seed(seed)
    if isinstance(pipeline, str):
        pipeline = detection_pipeline(pipeline)
    _check_pipeline(pipeline)
    array = _image_array(sample, image)
    n = len(sample)
    if sample.rotated_boxes is not None and n:
        corners = np.stack([rbox_corners(*row) for row in sample.rotated_boxes.tolist()]).reshape(-1, 2)
    else:
        corners = np.zeros((0, 2))
    data: dict[str, Any] = {
        "image": array,
        "bboxes": sample.boxes.detach().to(torch.float64).numpy().reshape(-1, 4),
        _BOX_FIELD: list(range(n)),
        # keypoints put pixel centres at integers (pixel i spans [i - 0.5, i + 0.5]); boxes put them at i + 0.5
        "keypoints": corners - 0.5,
        _CORNER_FIELD: list(range(len(corners))),
    }
    if sample.masks is not None and n:
        data["masks"] = sample.masks.numpy().astype(np.uint8)
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = pipeline(**data)

    result = np.clip(np.asarray(out["image"], dtype=np.float32), 0.0, 1.0)
    if result.ndim == 2:
        result = result[..., None]
    height, width = result.shape[:2]
    kept = np.rint(np.asarray(out[_BOX_FIELD], dtype=np.float64)).astype(np.int64)
    boxes = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)[:, :4]
    rotated = None
    if sample.rotated_boxes is not None:
        moved = np.zeros((len(corners), 2))
        if len(corners):
            points = np.asarray(out["keypoints"], dtype=np.float64).reshape(len(corners), -1)
            moved[np.rint(np.asarray(out[_CORNER_FIELD], dtype=np.float64)).astype(np.int64)] = points[:, :2] + 0.5
        min_visibility = float(pipeline.processors["bboxes"].params.min_visibility)
        rotated, visible = _rotated_after(moved.reshape(-1, 4, 2), kept, (width, height), min_visibility)
        kept, boxes = kept[visible], boxes[visible]
    masks = None
    if sample.masks is not None:
        masks = torch.zeros((0, height, width), dtype=torch.bool)
        if n:
            masks = torch.from_numpy(np.asarray(out["masks"]).astype(bool)[kept]).reshape(-1, height, width)

    def pick(values: list[str] | None) -> list[str] | None:
        return None if values is None else [values[i] for i in kept.tolist()]

    index = torch.from_numpy(kept)
    return AugmentedSample(
        image_id=sample.image_id,
        image=torch.from_numpy(np.ascontiguousarray(result.transpose(2, 0, 1))),
        boxes=torch.from_numpy(boxes).to(torch.float32),
        labels=sample.labels[index],
        class_names=sample.class_names,
        source_index=index,
        rotated_boxes=None if rotated is None else torch.from_numpy(rotated).to(torch.float32),
        masks=masks,
        colours=pick(sample.colours),
        types=pick(sample.types),
        altitude=sample.altitude,
        snow=sample.snow,
    )
