"""Tests for advbench.datasets.detection.augment: boxes, rotated boxes and masks follow the image; seeding."""

from __future__ import annotations

import math
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from advbench.datasets.detection import (
    DETECTION_AUGMENTATIONS,
    DetectionSample,
    augment_sample,
    detection_pipeline,
    list_detection_augmentations,
)
from advbench.datasets.detection.geometry import canonical_rbox, clip_polygon, polygon_area
from advbench.errors import ConfigError, InputError, UnknownNameError

WIDTH, HEIGHT = 48, 32
CLASSES = ("Car", "Bus", "Truck")


def _hand_corners(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    """Corners of a rotated rectangle, written out by hand (independently of the geometry module)."""
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    return np.array([[cx + a * w / 2 * c - b * h / 2 * s, cy + a * w / 2 * s + b * h / 2 * c]
                     for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))])


def _aabb(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def _sample(rotated: list[tuple[float, ...]], *, size: tuple[int, int] = (WIDTH, HEIGHT),
            axis_aligned_masks: bool = False) -> DetectionSample:
    """A sample whose boxes are exactly the envelopes of ``rotated``; masks fill the boxes (integer boxes only)
    or the rotated rectangles (pixel centres inside)."""
    width, height = size
    n = len(rotated)
    boxes = np.array([_aabb(_hand_corners(*r)) for r in rotated]).reshape(-1, 4)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    masks = np.zeros((n, height, width), dtype=bool)
    for i, (cx, cy, w, h, angle) in enumerate(rotated):
        if axis_aligned_masks:
            x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
            masks[i, y0:y1, x0:x1] = True
        else:
            t = math.radians(angle)
            along = (xs - cx) * math.cos(t) + (ys - cy) * math.sin(t)
            across = -(xs - cx) * math.sin(t) + (ys - cy) * math.cos(t)
            masks[i] = (np.abs(along) < w / 2) & (np.abs(across) < h / 2)
    return DetectionSample(
        image_id="hand",
        image_path=Path("hand.png"),
        image_size=size,
        boxes=torch.tensor(boxes, dtype=torch.float32),
        labels=torch.tensor([i % len(CLASSES) for i in range(n)], dtype=torch.int64),
        class_names=CLASSES,
        rotated_boxes=torch.tensor([canonical_rbox(*r) for r in rotated], dtype=torch.float32).reshape(-1, 5),
        masks=torch.from_numpy(masks),
        colours=[f"colour{i}" for i in range(n)],
        types=[f"type{i}" for i in range(n)],
        altitude="50m",
        snow=False,
    )


def _image(size: tuple[int, int] = (WIDTH, HEIGHT), seed: int = 0) -> torch.Tensor:
    return torch.rand((3, size[1], size[0]), generator=torch.Generator().manual_seed(seed))


# axis-aligned (integer edges) and tilted vehicles, all inside the 48 x 32 image
STRAIGHT = [(10.0, 8.0, 12.0, 6.0, 0.0), (36.0, 20.0, 8.0, 14.0, 0.0)]
TILTED = [(14.0, 18.0, 16.0, 6.0, 30.0), (34.0, 10.0, 10.0, 5.0, -65.0), (30.0, 24.0, 9.0, 4.0, 10.0)]


def test_horizontal_flip_gives_the_hand_computed_boxes() -> None:
    sample = _sample(STRAIGHT + TILTED)
    image = _image()
    out = augment_sample(sample, image, detection_pipeline([A.HorizontalFlip(p=1.0)]), seed=0)
    x0, y0, x1, y1 = sample.boxes.double().unbind(1)
    expected = torch.stack([WIDTH - x1, y0, WIDTH - x0, y1], dim=1)
    torch.testing.assert_close(out.boxes.double(), expected, atol=1e-4, rtol=0)
    # a mirror keeps the centre's y, maps cx to W - cx and the angle to -angle
    want = [canonical_rbox(WIDTH - cx, cy, w, h, -a) for cx, cy, w, h, a in sample.rotated_boxes.tolist()]
    torch.testing.assert_close(out.rotated_boxes.double(), torch.tensor(want, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.image, image.flip(2))
    assert torch.equal(out.masks, sample.masks.flip(2))
    assert out.source_index.tolist() == list(range(len(sample))) and out.labels.tolist() == sample.labels.tolist()
    assert out.colours == sample.colours and out.types == sample.types and out.altitude == "50m" and out.snow is False


@pytest.mark.parametrize(
    "transforms",
    [
        [A.HorizontalFlip(p=1.0)],
        [A.VerticalFlip(p=1.0)],
        [A.Transpose(p=1.0)],
        [A.RandomRotate90(p=1.0)],
        [A.Affine(scale=(0.9, 0.9), p=1.0)],
        "dihedral",
        "aerial",
    ],
    ids=["hflip", "vflip", "transpose", "rot90", "affine-scale", "dihedral", "aerial"],
)
def test_rotated_corners_stay_consistent_with_the_boxes(transforms) -> None:
    sample = _sample(STRAIGHT + TILTED)
    pipeline = detection_pipeline(transforms)
    for seed in range(6):
        out = augment_sample(sample, _image(), pipeline, seed=seed)
        assert len(out) == len(sample), "nothing leaves the image under these transforms"
        for box, rbox in zip(out.boxes.double(), out.rotated_boxes.tolist(), strict=True):
            np.testing.assert_allclose(_aabb(_hand_corners(*rbox)), box.numpy(), atol=2e-3)
        # quarter turns swap the image sides; the box sides keep their lengths (times the zoom)
        assert sorted(out.image_size) == sorted(sample.image_size)
        if isinstance(transforms, list):  # the presets zoom by a random factor, these by a known one
            zoom = 0.9 if isinstance(transforms[0], A.Affine) else 1.0
            want = sorted((w * zoom, h * zoom) for w, h in (canonical_rbox(*r)[2:4] for r in STRAIGHT + TILTED))
            np.testing.assert_allclose(sorted(r[2:4] for r in out.rotated_boxes.tolist()), want, atol=2e-3)


def test_masks_move_with_their_boxes() -> None:
    sample = _sample(STRAIGHT, axis_aligned_masks=True)
    pipeline = detection_pipeline("dihedral")
    seen_sizes = set()
    for seed in range(8):
        out = augment_sample(sample, _image(), pipeline, seed=seed)
        width, height = out.image_size
        seen_sizes.add((width, height))
        assert out.masks.shape == (len(sample), height, width) and out.masks.dtype == torch.bool
        for mask, box in zip(out.masks, out.boxes, strict=True):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            pixel_box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            torch.testing.assert_close(pixel_box, box, atol=1e-3, rtol=0)
            assert int(mask.sum()) == int(round(float((box[2] - box[0]) * (box[3] - box[1]))))
    assert seen_sizes == {(WIDTH, HEIGHT), (HEIGHT, WIDTH)}, "quarter turns should show up among 8 seeds"


def test_tilted_masks_stay_inside_their_rotated_boxes() -> None:
    sample = _sample(TILTED)
    out = augment_sample(sample, _image(), "aerial", seed=3)
    width, height = out.image_size
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    for mask, (cx, cy, w, h, angle) in zip(out.masks.numpy(), out.rotated_boxes.tolist(), strict=True):
        t = math.radians(angle)
        along = (xs - cx) * math.cos(t) + (ys - cy) * math.sin(t)
        across = -(xs - cx) * math.sin(t) + (ys - cy) * math.cos(t)
        inside = (np.abs(along) < w / 2 + 1.0) & (np.abs(across) < h / 2 + 1.0)
        assert mask.any() and not (mask & ~inside).any()


def test_same_seed_same_output_whatever_ran_before() -> None:
    sample = _sample(STRAIGHT + TILTED)
    image = _image()
    pipeline = detection_pipeline("aerial")
    first = augment_sample(sample, image, pipeline, seed=7)
    augment_sample(sample, image, pipeline, seed=8)
    again = augment_sample(sample, image, detection_pipeline("aerial"), seed=7)
    repeat = augment_sample(sample, image, pipeline, seed=7)
    for other in (again, repeat):
        assert torch.equal(first.image, other.image) and torch.equal(first.boxes, other.boxes)
        assert torch.equal(first.rotated_boxes, other.rotated_boxes) and torch.equal(first.masks, other.masks)
        assert torch.equal(first.source_index, other.source_index)
    outputs = [augment_sample(sample, image, pipeline, seed=s).image for s in range(4)]
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:]), "other seeds should give other draws"


def test_transforms_draw_independently() -> None:
    """albumentations seeds every transform of a Compose alike, which couples equal-probability flips;
    augment_sample shares one generator, so all four flip outcomes occur."""
    sample = _sample(STRAIGHT)
    image = _image()
    outcomes = set()
    for seed in range(24):
        out = augment_sample(sample, image, "flip", seed=seed)
        outcomes.add((torch.equal(out.image, image.flip(2)) or torch.equal(out.image, image.flip(1, 2)),
                      torch.equal(out.image, image.flip(1)) or torch.equal(out.image, image.flip(1, 2))))
    assert outcomes == {(False, False), (True, False), (False, True), (True, True)}


def test_cropped_out_boxes_are_dropped_from_every_field() -> None:
    # in the 24 x 32 left half: box 0 fully, box 1 not at all, box 2 by 75% (kept), box 3 by 10% (dropped)
    rotated = [(10.0, 8.0, 12.0, 6.0, 0.0), (36.0, 20.0, 8.0, 14.0, 0.0), (21.0, 26.0, 12.0, 4.0, 0.0),
               (28.0, 14.0, 10.0, 4.0, 0.0)]
    sample = _sample(rotated, axis_aligned_masks=True)
    out = augment_sample(sample, _image(), detection_pipeline([A.Crop(0, 0, 24, 32)], min_visibility=0.3), seed=0)
    assert out.image_size == (24, 32)
    assert out.source_index.tolist() == [0, 2]
    assert out.labels.tolist() == [sample.labels[0].item(), sample.labels[2].item()]
    assert out.colours == ["colour0", "colour2"] and out.types == ["type0", "type2"]
    assert out.masks.shape == (2, 32, 24) and out.rotated_boxes.shape == (2, 5)
    torch.testing.assert_close(out.boxes, torch.tensor([[4.0, 5.0, 16.0, 11.0], [15.0, 24.0, 24.0, 28.0]]))
    # the cut box's rotated box is its visible part, 9 x 4 centred at (19.5, 26)
    torch.testing.assert_close(out.rotated_boxes[1], torch.tensor([19.5, 26.0, 9.0, 4.0, 0.0]), atol=1e-3, rtol=0)
    assert int(out.masks[1].sum()) == 9 * 4 and torch.equal(out.masks[0], sample.masks[0, :, :24])
    target = out.target()
    assert set(target) == {"boxes", "labels", "masks", "rotated_boxes"} and target["masks"].dtype == torch.uint8


def test_everything_cropped_out_leaves_empty_but_well_shaped_fields() -> None:
    sample = _sample([(36.0, 20.0, 8.0, 14.0, 0.0)])
    out = augment_sample(sample, _image(), detection_pipeline([A.Crop(0, 0, 24, 32)]), seed=0)
    assert len(out) == 0 and out.boxes.shape == (0, 4) and out.rotated_boxes.shape == (0, 5)
    assert out.masks.shape == (0, 32, 24) and out.colours == [] and out.labels.dtype == torch.int64


def test_samples_without_boxes_rotations_or_masks() -> None:
    empty = _sample([])
    out = augment_sample(empty, _image(), "aerial", seed=1)
    assert len(out) == 0 and out.masks.shape[0] == 0 and out.rotated_boxes.shape == (0, 5)
    plain = DetectionSample(image_id="p", image_path=Path("p.png"), image_size=(WIDTH, HEIGHT),
                            boxes=torch.tensor([[2.0, 3.0, 12.0, 9.0]]), labels=torch.tensor([1]), class_names=CLASSES)
    out = augment_sample(plain, _image(), detection_pipeline([A.VerticalFlip(p=1.0)]), seed=0)
    torch.testing.assert_close(out.boxes, torch.tensor([[2.0, HEIGHT - 9.0, 12.0, HEIGHT - 3.0]]))
    assert out.rotated_boxes is None and out.masks is None and out.colours is None
    assert set(out.target()) == {"boxes", "labels"}


def test_loaded_sample_with_its_own_image(tmp_path: Path) -> None:
    from advbench.datasets.detection import generate_aerial_dataset, load_detection_dataset

    root = generate_aerial_dataset(tmp_path / "syn", n_images=1, size=(96, 64), seed=2)
    (sample,) = load_detection_dataset(f"evd4uav:{root}?masks=true")
    out = augment_sample(sample, None, "aerial", seed=0)
    assert out.image.dtype == torch.float32 and 0.0 <= float(out.image.min()) <= float(out.image.max()) <= 1.0
    assert out.masks is not None and out.rotated_boxes is not None and len(out.colours) == len(out)


def test_presets_are_registered() -> None:
    assert {"none", "flip", "dihedral", "photometric", "aerial"} <= set(list_detection_augmentations())
    assert "flip" in DETECTION_AUGMENTATIONS and list_detection_augmentations("*flip*") == ["flip"]
    out = augment_sample(_sample(STRAIGHT), _image(), "photometric", seed=0)
    torch.testing.assert_close(out.boxes, _sample(STRAIGHT).boxes)


def test_bad_arguments_raise_clear_errors() -> None:
    sample = _sample(STRAIGHT)
    with pytest.raises(UnknownNameError, match="known detection augmentations: aerial"):
        detection_pipeline("mosaic")
    with pytest.raises(ConfigError, match="detection_pipeline"):
        augment_sample(sample, _image(), A.Compose([A.HorizontalFlip()]), seed=0)
    with pytest.raises(ConfigError, match="albumentations transforms"):
        detection_pipeline([lambda image: image])
    with pytest.raises(ConfigError, match="min_visibility"):
        detection_pipeline("flip", min_visibility=1.5)
    for seed in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="seed"):
            augment_sample(sample, _image(), "flip", seed=seed)
    with pytest.raises(InputError, match="annotated as 48x32"):
        augment_sample(sample, _image((32, 32)), "flip", seed=0)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        augment_sample(sample, _image() * 255, "flip", seed=0)


def test_clip_polygon_and_area_by_hand() -> None:
    diamond = np.array([[0.0, -2.0], [2.0, 0.0], [0.0, 2.0], [-2.0, 0.0]])  # area 8, centred on the corner (0, 0)
    assert polygon_area(diamond) == pytest.approx(8.0)
    assert polygon_area(clip_polygon(diamond, 10, 10)) == pytest.approx(2.0)
    assert clip_polygon(diamond + 20, 10, 10).shape == (0, 2)
    inside = diamond + 5
    np.testing.assert_allclose(clip_polygon(inside, 10, 10), inside)
