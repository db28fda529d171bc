"""The synthetic EVD4UAV generator: its folder loads with the real ``evd4uav`` loader and is self-consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from advbench.datasets.detection import (
    EVD4UAV_ALTITUDES,
    DetectionSample,
    export_coco,
    load_coco,
    load_detection_dataset,
)
from advbench.datasets.detection.geometry import rbox_corners
from advbench.datasets.detection.synthetic_aerial import generate_aerial_dataset
from advbench.errors import DatasetError

N_IMAGES = 30
SIZE = (256, 192)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_aerial_dataset(tmp_path_factory.mktemp("aerial") / "seed0", n_images=N_IMAGES, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def samples(root: Path) -> list[DetectionSample]:
    return load_detection_dataset(f"evd4uav:{root}?masks=true")


def _label_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_folder_loads_with_the_evd4uav_loader(root: Path, samples: list[DetectionSample]) -> None:
    assert len(samples) == N_IMAGES
    assert "synthetic" in (root / "README.txt").read_text().lower()
    for s in samples:
        image = s.load_image()
        assert image.shape == (3, SIZE[1], SIZE[0]) and s.image_size == SIZE
        n = len(_label_lines(root / "bb" / f"{s.image_id}.txt"))
        assert len(s) == n == len(_label_lines(root / "rotated_bb" / f"{s.image_id}.txt"))
        assert 3 <= n <= 12
        assert s.rotated_boxes is not None and s.masks is not None and s.colours is not None
        assert s.types == [s.class_names[i] for i in s.labels.tolist()]
        x0, y0, x1, y1 = s.boxes.unbind(1)
        assert bool(((x1 - x0) > 2).all() and ((y1 - y0) > 2).all())
        assert bool((s.boxes >= 0).all() and (x1 <= SIZE[0]).all() and (y1 <= SIZE[1]).all())
    assert {s.altitude for s in samples} == set(EVD4UAV_ALTITUDES)
    assert sum(bool(s.snow) for s in samples) == round(0.2 * N_IMAGES)
    assert {c for s in samples for c in s.types or []} == {"Car", "Bus", "Truck"}


def test_vehicles_shrink_with_altitude(samples: list[DetectionSample]) -> None:
    def mean_area(altitude: str) -> float:
        boxes = torch.cat([s.boxes for s in samples if s.altitude == altitude])
        return float(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).mean())

    a50, a70, a90 = (mean_area(a) for a in ("50m", "70m", "90m"))
    assert a50 > a70 > a90


def test_mask_instances_lie_in_their_boxes(samples: list[DetectionSample]) -> None:
    for s in samples:
        assert s.masks is not None and s.rotated_boxes is not None
        for k in range(len(s)):
            ys, xs = np.nonzero(s.masks[k].numpy())
            assert xs.size > 0, f"{s.image_id} box {k} has an empty mask"
            x0, y0, x1, y1 = s.boxes[k].tolist()
            inside = (xs + 0.5 >= x0 - 1) & (xs + 0.5 <= x1 + 1) & (ys + 0.5 >= y0 - 1) & (ys + 0.5 <= y1 + 1)
            assert inside.mean() > 0.95
            w, h = s.rotated_boxes[k, 2:4].tolist()
            assert 0.8 < xs.size / (w * h) < 1.25  # the mask fills the rotated box and is not overdrawn


def test_rotated_boxes_match_the_axis_aligned_boxes(samples: list[DetectionSample]) -> None:
    for s in samples:
        assert s.rotated_boxes is not None
        for rbox, box in zip(s.rotated_boxes.tolist(), s.boxes.tolist(), strict=True):
            corners = rbox_corners(*rbox)
            bounds = [*corners.min(axis=0), *corners.max(axis=0)]
            assert np.allclose(bounds, box, atol=1.0)
            assert rbox[2] >= rbox[3] > 0 and -90.0 <= rbox[4] < 90.0


def test_same_seed_same_bytes_and_other_seed_differs(root: Path, tmp_path: Path) -> None:
    again = generate_aerial_dataset(tmp_path / "again", n_images=N_IMAGES, size=SIZE, seed=0)
    other = generate_aerial_dataset(tmp_path / "other", n_images=N_IMAGES, size=SIZE, seed=1)
    names = [
        "images/syn_0000.png",
        "images/syn_0007.png",
        "masks/syn_0003.png",
        "bb/syn_0001.txt",
        "rotated_bb/syn_0002.txt",
        "attributes/syn_0004.txt",
        "altitude_mapping.txt",
        "snow_images.txt",
    ]
    for name in names:
        assert (again / name).read_bytes() == (root / name).read_bytes(), name
    for name in names[:5]:
        assert (other / name).read_bytes() != (root / name).read_bytes(), name


def test_coco_export_round_trips(samples: list[DetectionSample], tmp_path: Path) -> None:
    back = load_coco(export_coco(samples, tmp_path / "coco.json"), masks=True)
    assert len(back) == len(samples)
    for s, r in zip(samples, back, strict=True):
        assert (r.image_id, r.image_path.resolve(), r.image_size) == (s.image_id, s.image_path.resolve(), s.image_size)
        assert torch.equal(r.boxes, s.boxes) and torch.equal(r.labels, s.labels)
        assert (r.altitude, r.snow, r.colours, r.types) == (s.altitude, s.snow, s.colours, s.types)
        assert r.rotated_boxes is not None and s.rotated_boxes is not None
        assert torch.allclose(r.rotated_boxes, s.rotated_boxes, atol=1e-4)
        assert r.masks is not None and s.masks is not None and torch.equal(r.masks, s.masks)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_images": 0}, "n_images must be a positive integer"),
        ({"size": (32, 32)}, "out of range"),
        ({"snow_fraction": 1.5}, "snow_fraction must lie in"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=match):
        generate_aerial_dataset(tmp_path / "out", **kwargs)  # type: ignore[arg-type]


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="not an empty folder"):
        generate_aerial_dataset(tmp_path, n_images=1)
