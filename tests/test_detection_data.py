"""Tests for advbench.datasets.detection: EVD4UAV, DOTA, VisDrone and COCO loaders, COCO export, errors, fuzzing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as coco_mask

from advbench.datasets.catalog import DATASETS, list_datasets
from advbench.datasets.detection import (
    EVD4UAV_CLASSES,
    DetectionSample,
    export_coco,
    inspect_dataset,
    load_coco,
    load_detection_dataset,
    load_dota,
    load_evd4uav,
    load_visdrone,
)
from advbench.datasets.detection.dota import DOTA_CLASSES
from advbench.datasets.detection.geometry import min_area_rect
from advbench.datasets.detection.lines import parse_dota_line, parse_evd4uav_line, parse_visdrone_line
from advbench.datasets.detection.records import check_in_image
from advbench.datasets.detection.visdrone import VISDRONE_CLASSES
from advbench.errors import DatasetError, MissingPathError, UnknownNameError
from advbench.task_names import DETECTION


def _image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 120, 200)).save(path)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


def _corners(cx: float, cy: float, w: float, h: float, angle: float) -> list[float]:
    """Corners of a rectangle, computed by hand (independently of the geometry module)."""
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    pts = []
    for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        dx, dy = a * w / 2, b * h / 2
        pts += [cx + dx * c - dy * s, cy + dx * s + dy * c]
    return pts


def _fmt(values: list[float]) -> str:
    return " ".join(repr(v) for v in values)


# A rectangle 20 x 6 centred at (30, 20), turned 30 degrees: its hull spans
# x: 30 -+ (10 cos30 + 3 sin30) = 30 -+ 10.1603, y: 20 -+ (10 sin30 + 3 cos30) = 20 -+ 7.5981.
TILTED = _corners(30, 20, 20, 6, 30)
TILTED_XYXY = [19.839746, 12.401924, 40.160254, 27.598076]


@pytest.fixture()
def evd_root(tmp_path: Path) -> Path:
    root = tmp_path / "evd"
    for name, size in (("a.png", (100, 80)), ("b.jpg", (100, 80)), ("c.png", (60, 40)), ("d.png", (100, 80))):
        _image(root / "images" / name, size)
    _write(
        root,
        {
            "bb/a.txt": "0 10 10 30 20\n2 40 30 60 70\n",
            # 6 tokens (cx cy w h angle) and 9 tokens (class + corners of the 40..60 x 30..70 box, listed clockwise)
            "rotated_bb/a.txt": "0 20 15 20 10 0\n2 40 30 60 30 60 70 40 70\n",
            "bb/b.jpg.unused": "",
            "bb/b.txt": "1 5 5 25 35\n",
            "rotated_bb/c.txt": f"0 {_fmt(TILTED)}\n{_fmt(_corners(45, 20, 10, 8, 0))} truck 0\n",
            "altitude_mapping.txt": "a 50m\nb.jpg 70M\nc 90m\nd 50m\n",
            "snow_images.txt": "b.jpg\n",
            "non_snow_images.txt": "a.png\nc\n",
            "attributes/a.txt": "Red Car\nwhite truck\n",
        },
    )
    instance = np.zeros((80, 100), dtype=np.uint8)
    instance[10:20, 10:30] = 1
    instance[30:70, 40:60] = 2
    (root / "masks").mkdir()
    Image.fromarray(instance).save(root / "masks" / "a.png")
    return root


@pytest.fixture()
def dota_root(tmp_path: Path) -> Path:
    root = tmp_path / "dota"
    _image(root / "images" / "p1.png", (120, 90))
    _image(root / "images" / "p2.png", (50, 50))
    _write(
        root,
        {
            "labelTxt/p1.txt": f"imagesource:GoogleEarth\ngsd:0.146\n{_fmt(TILTED)} small-vehicle 0\n"
            "60 10 100 10 100 30 60 30 Plane 1\n",
            "labelTxt/p2.txt": "gsd:null\n",
        },
    )
    return root


@pytest.fixture()
def visdrone_root(tmp_path: Path) -> Path:
    root = tmp_path / "visdrone"
    _image(root / "images" / "v1.jpg", (80, 60))
    _write(
        root,
        {"annotations/v1.txt": "10,5,20,15,1,4,0,0\n0,0,80,10,0,0,0,0\n1,2,3,4,1,11,0,0\n30,30,10,20,1,1,1,2,\n"},
    )
    return root


@pytest.fixture()
def coco_file(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    _image(root / "images" / "x.png", (64, 48))
    _image(root / "images" / "y.png", (32, 32))
    rle = coco_mask.encode(np.asfortranarray(np.pad(np.ones((4, 6), np.uint8), ((10, 34), (20, 38)))))
    doc = {
        "images": [
            {"id": 5, "file_name": "x.png", "width": 64, "height": 48},
            {"id": 9, "file_name": "y.png"},
        ],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [10, 20, 30, 10], "iscrowd": 0,
             "segmentation": [[10, 20, 40, 20, 40, 30, 10, 30]]},
            {"id": 2, "image_id": 5, "category_id": 3, "bbox": [20, 10, 6, 4], "iscrowd": 0,
             "segmentation": {"size": [48, 64], "counts": rle["counts"].decode()}},
            {"id": 3, "image_id": 5, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1, "segmentation": []},
        ],
        "categories": [{"id": 7, "name": "bus"}, {"id": 3, "name": "car"}],
    }  # fmt: skip
    path = root / "annotations" / "instances.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    return path


# ----------------------------------------------------------------------------------------------- parsing


def test_evd4uav_parses_boxes_rotations_and_metadata(evd_root: Path) -> None:
    samples = load_evd4uav(evd_root)
    assert [s.image_id for s in samples] == ["a", "b", "c", "d"]
    a, b, c, d = samples
    assert a.image_size == (100, 80) and c.image_size == (60, 40)
    assert a.boxes.tolist() == [[10, 10, 30, 20], [40, 30, 60, 70]]
    assert a.labels.tolist() == [0, 2] and a.labels.dtype == torch.int64
    # 6-token line kept as is; the tall 9-token box becomes le90: w >= h, angle -90.
    assert torch.allclose(a.rotated_boxes, torch.tensor([[20, 15, 20, 10, 0], [50, 50, 40, 20, -90.0]]))
    assert a.colours == ["Red", "White"] and a.types == ["Car", "Truck"]
    assert (a.altitude, a.snow) == ("50m", False)
    assert b.boxes.tolist() == [[5, 5, 25, 35]] and b.rotated_boxes is None
    assert (b.altitude, b.snow, b.colours) == ("70m", True, None)
    # 9-token corner points: axis-aligned hull and the minimum-area rectangle of the tilted box.
    assert torch.allclose(c.boxes[0], torch.tensor(TILTED_XYXY), atol=1e-4)
    assert torch.allclose(c.rotated_boxes[0], torch.tensor([30, 20, 20, 6, 30.0]), atol=1e-4)
    # 10-token DOTA-style line with a category name.
    assert c.labels.tolist() == [0, 2]
    assert torch.allclose(c.boxes[1], torch.tensor([40, 16, 50, 24.0]), atol=1e-5)
    assert torch.allclose(c.rotated_boxes[1], torch.tensor([45, 20, 10, 8, 0.0]), atol=1e-5)
    assert len(d) == 0 and d.boxes.shape == (0, 4) and d.snow is None and a.masks is None


def test_corner_points_in_any_order_give_the_same_rotated_box() -> None:
    pts = np.asarray(TILTED).reshape(4, 2)
    for order in ([0, 1, 2, 3], [2, 1, 0, 3], [3, 0, 2, 1]):
        record = parse_evd4uav_line("1 " + _fmt(pts[order].ravel().tolist()), "'f.txt' line 1", EVD4UAV_CLASSES)
        assert np.allclose(record.rbox, (30, 20, 20, 6, 30), atol=1e-6)
    assert np.allclose(min_area_rect(np.asarray(_corners(5, 5, 4, 4, 70)).reshape(4, 2)), (5, 5, 4, 4, -20))


def test_evd4uav_masks_from_png_and_json(evd_root: Path) -> None:
    a = load_evd4uav(evd_root, masks=True)[0]
    assert a.masks.shape == (2, 80, 100) and a.masks.dtype == torch.bool
    assert a.masks[0].sum() == 200 and a.masks[0, 10:20, 10:30].all()
    assert a.masks[1].sum() == 800
    (evd_root / "masks" / "a.png").unlink()
    rle = coco_mask.encode(np.asfortranarray(a.masks[1].numpy().astype(np.uint8)))
    segs = [[[10, 10, 30, 10, 30, 20, 10, 20]], {"size": [80, 100], "counts": rle["counts"].decode()}]
    (evd_root / "masks" / "a.json").write_text(json.dumps(segs))
    b = load_evd4uav(evd_root, masks=True)[0]
    assert torch.equal(b.masks[1], a.masks[1])
    assert b.masks[0, 12:18, 12:28].all() and not b.masks[0, 30:, :].any()


def test_dota_parses_headers_corners_and_categories(dota_root: Path) -> None:
    p1, p2 = load_dota(dota_root)
    assert p1.labels.tolist() == [DOTA_CLASSES.index("small-vehicle"), DOTA_CLASSES.index("plane")]
    assert torch.allclose(p1.boxes, torch.tensor([TILTED_XYXY, [60, 10, 100, 30]]), atol=1e-4)
    assert torch.allclose(p1.rotated_boxes, torch.tensor([[30, 20, 20, 6, 30], [80, 20, 40, 20, 0.0]]), atol=1e-4)
    assert len(p2) == 0 and p2.rotated_boxes is None


def test_visdrone_skips_ignored_and_others(visdrone_root: Path) -> None:
    (v1,) = load_visdrone(visdrone_root)
    assert v1.boxes.tolist() == [[10, 5, 30, 20], [30, 30, 40, 50]]
    assert [VISDRONE_CLASSES[i] for i in v1.labels.tolist()] == ["car", "pedestrian"]
    assert v1.rotated_boxes is None


def test_coco_parses_categories_crowd_and_segmentations(coco_file: Path) -> None:
    x, y = load_coco(coco_file, masks=True)
    assert x.class_names == ("car", "bus")  # sorted by category id 3, 7
    assert x.boxes.tolist() == [[10, 20, 40, 30], [20, 10, 26, 14]] and x.labels.tolist() == [1, 0]
    assert x.image_path.parent.name == "images" and x.image_id == "x"
    assert x.masks.shape == (2, 48, 64) and int(x.masks[1].sum()) == 24 and x.masks[1, 10:14, 20:26].all()
    assert x.masks[0, 21:29, 11:39].all() and not x.masks[0, 31:].any()
    assert len(y) == 0 and y.image_size == (32, 32)
    assert load_coco(coco_file)[0].masks is None


def test_load_image_is_float_chw_in_unit_range(evd_root: Path) -> None:
    img = load_evd4uav(evd_root)[2].load_image()
    assert img.shape == (3, 40, 60) and img.dtype == torch.float32
    assert float(img.min()) >= 0 and float(img.max()) <= 1
    assert torch.allclose(img[:, 0, 0], torch.tensor([40, 120, 200]) / 255.0)


def test_sample_validates_its_fields(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="boxes must have shape"):
        DetectionSample("s", tmp_path, (4, 4), torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64), ("a",))
    with pytest.raises(DatasetError, match="labels must lie in"):
        DetectionSample("s", tmp_path, (4, 4), torch.zeros(1, 4), torch.ones(1, dtype=torch.int64), ("a",))


# ----------------------------------------------------------------------------------------------- filters


def test_evd4uav_filters(evd_root: Path) -> None:
    def ids(samples: list[DetectionSample]) -> list[str]:
        return [s.image_id for s in samples]

    assert ids(load_evd4uav(evd_root, altitude=["50m"])) == ["a", "d"]
    assert ids(load_evd4uav(evd_root, altitude="70m")) == ["b"]
    assert ids(load_evd4uav(evd_root, snow=True)) == ["b"]
    assert ids(load_evd4uav(evd_root, snow=False)) == ["a", "c"]  # d's snow flag is unknown
    trucks = load_evd4uav(evd_root, classes=["truck"])
    assert [s.labels.tolist() for s in trucks] == [[2], [], [2], []]
    assert trucks[0].types == ["Truck"] and trucks[0].rotated_boxes.shape == (1, 5) and trucks[1].rotated_boxes is None
    spec = load_detection_dataset(f"evd4uav:{evd_root}?altitude=50m,90m&snow=false&classes=car,bus")
    assert ids(spec) == ["a", "c"] and [s.labels.tolist() for s in spec] == [[0], [0]]
    assert [len(s) for s in load_detection_dataset(f"evd4uav:{evd_root}?classes=1")] == [0, 1, 0, 0]


def test_altitude_filter_and_extension(evd_root: Path) -> None:
    with pytest.raises(DatasetError, match="unknown altitude 40m"):
        load_evd4uav(evd_root, altitude=["40m"])
    assert load_evd4uav(evd_root, altitude=["40m"], altitudes=["40m"]) == []
    (evd_root / "altitude_mapping.txt").write_text("a 110m\n")
    with pytest.raises(DatasetError, match="altitude_mapping.txt' line 1: unknown altitude '110m'"):
        load_evd4uav(evd_root)
    assert [s.altitude for s in load_detection_dataset(f"evd4uav:{evd_root}?altitudes=110m")][:2] == ["110m", None]
    (evd_root / "altitude_mapping.txt").unlink()
    with pytest.raises(MissingPathError, match="altitude_mapping.txt"):
        load_evd4uav(evd_root, altitude="50m")


def test_class_filters_of_other_loaders(dota_root: Path, visdrone_root: Path, coco_file: Path) -> None:
    assert [s.labels.tolist() for s in load_dota(dota_root, classes="plane")] == [[0], []]
    assert load_visdrone(visdrone_root, classes=["pedestrian"])[0].boxes.tolist() == [[30, 30, 40, 50]]
    assert load_detection_dataset(f"coco:{coco_file}?classes=bus")[0].labels.tolist() == [1]
    with pytest.raises(DatasetError, match="unknown class 'boat'"):
        load_dota(dota_root, classes=["boat"])


# ------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", ["evd4uav", "dota", "visdrone", "coco"])
def test_round_trip_through_coco_export(
    kind: str, evd_root: Path, dota_root: Path, visdrone_root: Path, coco_file: Path, tmp_path: Path
) -> None:
    source = {"evd4uav": evd_root, "dota": dota_root, "visdrone": visdrone_root, "coco": coco_file}[kind]
    masks = kind in ("evd4uav", "coco")
    samples = DATASETS.get(kind, task=DETECTION)(source, **({"masks": True} if masks else {}))
    out = export_coco(samples, tmp_path / "export" / "out.json")
    assert [p.name for p in out.parent.iterdir()] == ["out.json"]  # no temp file left behind
    back = load_coco(out, masks=masks)
    assert len(back) == len(samples)
    for s, r in zip(samples, back, strict=True):
        assert (r.image_id, r.image_path.resolve(), r.image_size) == (s.image_id, s.image_path.resolve(), s.image_size)
        assert torch.equal(r.boxes, s.boxes) and torch.equal(r.labels, s.labels)
        assert r.class_names == s.class_names
        assert (r.altitude, r.snow, r.colours, r.types) == (s.altitude, s.snow, s.colours, s.types)
        assert (r.rotated_boxes is None) == (s.rotated_boxes is None)
        if s.rotated_boxes is not None:
            assert torch.allclose(r.rotated_boxes, s.rotated_boxes, atol=1e-4)
        assert (r.masks is None) == (s.masks is None or not len(s))
        if r.masks is not None:
            assert torch.equal(r.masks, s.masks)


def test_export_into_the_image_folder_uses_relative_names(evd_root: Path) -> None:
    out = export_coco(load_evd4uav(evd_root), evd_root / "coco.json")
    names = [img["file_name"] for img in json.loads(out.read_text())["images"]]
    assert names == ["images/a.png", "images/b.jpg", "images/c.png", "images/d.png"]
    with pytest.raises(DatasetError, match="only 1 categories"):
        export_coco(load_evd4uav(evd_root), evd_root / "bad.json", categories=["car"])


# ------------------------------------------------------------------------------------------------- inspect


def test_inspect_dataset_counts(evd_root: Path) -> None:
    info = inspect_dataset(load_evd4uav(evd_root))
    assert (info["images"], info["boxes"]) == (4, 5)
    assert info["classes"] == {"Bus": 1, "Car": 2, "Truck": 2}
    assert info["altitudes"] == {
        "50m": {"images": 2, "boxes": 2}, "70m": {"images": 1, "boxes": 1}, "90m": {"images": 1, "boxes": 2}
    }  # fmt: skip
    assert info["snow"] == {"(none)": 1, "no snow": 2, "snow": 1}
    assert info["colours"] == {"(none)": 3, "Red": 1, "White": 1}
    assert info["types"] == {"(none)": 3, "Car": 1, "Truck": 1}
    assert info["image_sizes"] == {"100x80": 3, "60x40": 1}
    assert info["boxes_per_image"] == {"min": 0, "mean": 1.25, "max": 2}
    assert (info["with_rotated_boxes"], info["with_masks"]) == (2, 0)
    json.dumps(info)


# -------------------------------------------------------------------------------------------------- errors

BASE = {
    "evd4uav": ({"bb/a.txt": "0 10 10 30 20\n"}, load_evd4uav),
    "dota": ({"labelTxt/a.txt": "10 10 30 10 30 20 10 20 plane 0\n"}, load_dota),
    "visdrone": ({"annotations/a.txt": "10,10,20,10,1,4,0,0\n"}, load_visdrone),
}

BAD = [
    ("evd4uav", {"bb/a.txt": "0 10 10 30 20\n0 1 2 3\n"}, "bb/a.txt", 2, "expected 5, 6, 9 or 10 tokens"),
    ("evd4uav", {"bb/a.txt": "0 10 x 30 20\n"}, "bb/a.txt", 1, "is not a number"),
    ("evd4uav", {"bb/a.txt": "0 10 10 130 20\n"}, "bb/a.txt", 1, "outside the 100x80 image"),
    ("evd4uav", {"bb/a.txt": "\n0 10 10 10 20\n"}, "bb/a.txt", 2, "degenerate box"),
    ("evd4uav", {"bb/a.txt": "0 30 10 10 20\n"}, "bb/a.txt", 1, "degenerate box"),
    ("evd4uav", {"bb/a.txt": "0 10 10 30 nan\n"}, "bb/a.txt", 1, "not a finite number"),
    ("evd4uav", {"bb/a.txt": "7 10 10 30 20\n"}, "bb/a.txt", 1, "unknown class id 7"),
    ("evd4uav", {"bb/a.txt": "0.5 10 10 30 20\n"}, "bb/a.txt", 1, "not an integer"),
    ("evd4uav", {"rotated_bb/a.txt": "0 10 10 20 20 30 30 40 40\n"}, "rotated_bb/a.txt", 1, "degenerate"),
    ("evd4uav", {"rotated_bb/a.txt": "0 50 40 0 10 30\n"}, "rotated_bb/a.txt", 1, "degenerate rotated box"),
    ("evd4uav", {"rotated_bb/a.txt": "10 20 30 20 30 40 10 40 boat 0\n"}, "rotated_bb/a.txt", 1, "unknown category"),
    ("evd4uav", {"rotated_bb/a.txt": "2 10 10 30 20\n"}, "rotated_bb/a.txt", 1, "disagrees with"),
    ("evd4uav", {"rotated_bb/a.txt": "0 10 10 30 20\n0 10 10 30 20\n"}, "rotated_bb/a.txt", 2, "same vehicles"),
    ("evd4uav", {"altitude_mapping.txt": "a 50m\nb 40m\n"}, "altitude_mapping.txt", 2, "unknown altitude '40m'"),
    ("evd4uav", {"altitude_mapping.txt": "a\n"}, "altitude_mapping.txt", 1, "expected '<image stem> <altitude>'"),
    ("evd4uav", {"altitude_mapping.txt": "a 50m\na 70m\n"}, "altitude_mapping.txt", 2, "already has altitude"),
    ("evd4uav", {"snow_images.txt": "a.png\n", "non_snow_images.txt": "\na\n"}, "non_snow_images.txt", 2, "also"),
    ("evd4uav", {"attributes/a.txt": "Pink Car\n"}, "attributes/a.txt", 1, "unknown colour 'Pink'"),
    ("evd4uav", {"attributes/a.txt": "Red Bus\n"}, "attributes/a.txt", 1, "disagrees with the box's class Car"),
    ("evd4uav", {"attributes/a.txt": "Red Car\nRed Car\n"}, "attributes/a.txt", 2, "2 attribute lines for 1 boxes"),
    ("evd4uav", {"attributes/a.txt": "Red\n"}, "attributes/a.txt", 1, "expected '<colour> <type>'"),
    ("dota", {"labelTxt/a.txt": "imagesource:x\ngsd:0.1\n10 10 30 10 30 20 10 20 plane\n"}, "labelTxt/a.txt", 3,
     "expected 10 tokens"),
    ("dota", {"labelTxt/a.txt": "10 10 30 10 30 20 10 20 plane 2\n"}, "labelTxt/a.txt", 1, "difficult flag"),
    ("dota", {"labelTxt/a.txt": "10 10 30 10 30 20 10 20 boat 0\n"}, "labelTxt/a.txt", 1, "unknown category 'boat'"),
    ("dota", {"labelTxt/a.txt": "\n10 -5 30 -5 30 20 10 20 plane 0\n"}, "labelTxt/a.txt", 2, "outside"),
    ("visdrone", {"annotations/a.txt": "1,2,3,4,1,4,0\n"}, "annotations/a.txt", 1, "expected 8 comma-separated"),
    ("visdrone", {"annotations/a.txt": "1,2,3,4,1,4,0,0\n1,2,0,4,1,4,0,0\n"}, "annotations/a.txt", 2, "degenerate"),
    ("visdrone", {"annotations/a.txt": "1,2,3,4,1,12,0,0\n"}, "annotations/a.txt", 1, "unknown VisDrone category"),
    ("visdrone", {"annotations/a.txt": "1,2,3,4,1,4,a,0\n"}, "annotations/a.txt", 1, "truncation 'a' is not a number"),
]  # fmt: skip


def _base_dataset(kind: str, root: Path) -> None:
    _image(root / "images" / "a.png", (100, 80))
    _write(root, BASE[kind][0])


@pytest.mark.parametrize(("kind", "files", "bad_file", "line", "message"), BAD, ids=[f"{b[0]}-{b[4]}" for b in BAD])
def test_bad_lines_name_file_and_line(
    kind: str, files: dict[str, str], bad_file: str, line: int, message: str, tmp_path: Path
) -> None:
    _base_dataset(kind, tmp_path)
    _write(tmp_path, files)
    with pytest.raises(DatasetError) as info:
        BASE[kind][1](tmp_path)
    text = str(info.value)
    assert f"{tmp_path / bad_file}' line {line}:" in text
    assert message in text


@pytest.mark.parametrize("kind", sorted(BASE))
def test_label_file_without_image_is_an_error(kind: str, tmp_path: Path) -> None:
    _base_dataset(kind, tmp_path)
    (label_file,) = BASE[kind][0]
    orphan = tmp_path / Path(label_file).parent / "zzz.txt"
    orphan.write_text("")
    with pytest.raises(DatasetError, match=r"label file '.*zzz\.txt' has no image 'zzz\.\*'"):
        BASE[kind][1](tmp_path)


def test_clip_option_clips_boxes_that_stick_out(tmp_path: Path) -> None:
    _base_dataset("dota", tmp_path)
    _write(tmp_path, {"labelTxt/a.txt": "10 -5 30 -5 30 20 10 20 plane 0\n"})
    (sample,) = load_detection_dataset(f"dota:{tmp_path}?clip=true")
    assert sample.boxes.tolist() == [[10, 0, 30, 20]]
    _write(tmp_path, {"labelTxt/a.txt": "110 10 130 10 130 20 110 20 plane 0\n"})
    with pytest.raises(DatasetError, match="a.txt' line 1: .* no area inside the image"):
        load_dota(tmp_path, clip=True)


def test_mask_errors_name_the_file(evd_root: Path) -> None:
    Image.fromarray(np.full((80, 100), 3, dtype=np.uint8)).save(evd_root / "masks" / "a.png")
    with pytest.raises(DatasetError, match=r"a\.png' has instance value 3 but the label file has only 2 boxes"):
        load_evd4uav(evd_root, masks=True)
    (evd_root / "masks" / "a.png").unlink()
    (evd_root / "masks" / "a.json").write_text(json.dumps([[[1, 2, 3, 4, 5, 6]], {"size": [80, 100], "counts": "z"}]))
    with pytest.raises(DatasetError, match=r"a\.json' entry 1: RLE counts string has invalid character"):
        load_evd4uav(evd_root, masks=True)
    (evd_root / "masks" / "a.json").write_text(json.dumps([[[1, 2, 3]], [[1, 2, 3, 4, 5, 6]]]))
    with pytest.raises(DatasetError, match=r"a\.json' entry 0: each polygon"):
        load_evd4uav(evd_root, masks=True)
    (evd_root / "masks" / "a.json").write_text(json.dumps([{"size": [80, 100], "counts": [5, 7]}] * 2))
    with pytest.raises(DatasetError, match=r"a\.json' entry 0: RLE run lengths must .* sum to"):
        load_evd4uav(evd_root, masks=True)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["annotations"][1].update(bbox=[20, 10, 0, 4]), r"annotation 1 \(id 2\): degenerate box"),
        (lambda d: d["annotations"][0].update(bbox=[10, 20, "3", 4]), r"annotation 0 \(id 1\): 'bbox' must be"),
        (lambda d: d["annotations"][0].update(bbox=[50, 20, 30, 10]), r"annotation 0 \(id 1\): box .* outside"),
        (lambda d: d["annotations"][0].update(category_id=4), r"annotation 0 \(id 1\): category_id 4 is not"),
        (lambda d: d["annotations"][0].update(image_id=6), r"annotation 0 \(id 1\): image_id 6 is not"),
        (lambda d: d["images"][1].update(file_name="nope.png"), r"image 1 \(id 9\): image 'nope.png' not found"),
        (lambda d: d["images"][0].update(width=65), r"image 0 \(id 5\): width x height 65x48 disagrees"),
        (lambda d: d["categories"].append({"id": 3, "name": "van"}), "category 2: category id 3 is used twice"),
    ],
)
def test_coco_errors_name_file_and_entry(coco_file: Path, edit, message: str) -> None:
    doc = json.loads(coco_file.read_text())
    edit(doc)
    coco_file.write_text(json.dumps(doc, indent=1))
    with pytest.raises(DatasetError, match=f"instances.json' {message}"):
        load_coco(coco_file)


def test_coco_syntax_error_names_the_line(coco_file: Path) -> None:
    coco_file.write_text('{\n  "images": [\n  oops\n]}')
    with pytest.raises(DatasetError, match=r"instances\.json' line 3: invalid JSON"):
        load_coco(coco_file)


def test_specs_and_missing_paths(tmp_path: Path) -> None:
    assert list_datasets(task=DETECTION) == ["coco", "dota", "evd4uav", "visdrone"]
    with pytest.raises(UnknownNameError, match="known detection data sets: coco, dota, evd4uav, visdrone"):
        load_detection_dataset("kitti:/x")
    with pytest.raises(DatasetError, match="option 'altitude=50m' is not one of classes=..., clip=..."):
        load_detection_dataset(f"dota:{tmp_path}?altitude=50m")
    with pytest.raises(DatasetError, match="option 'snow=maybe' is invalid"):
        load_detection_dataset(f"evd4uav:{tmp_path}?snow=maybe")
    with pytest.raises(DatasetError, match="has no path"):
        load_detection_dataset("evd4uav:")
    with pytest.raises(MissingPathError, match="does not exist"):
        load_detection_dataset(f"evd4uav:{tmp_path / 'nope'}")
    _image(tmp_path / "images" / "a.png", (8, 8))
    with pytest.raises(MissingPathError, match="neither a bb/ nor a rotated_bb/"):
        load_evd4uav(tmp_path)
    with pytest.raises(MissingPathError, match="coco.json' does not exist"):
        load_coco(tmp_path / "coco.json")


# ------------------------------------------------------------------------------------------------ fuzzing

PARSERS = [(parse_evd4uav_line, EVD4UAV_CLASSES), (parse_dota_line, DOTA_CLASSES), (parse_visdrone_line,
                                                                                   VISDRONE_CLASSES)]
TOKENS = st.one_of(
    st.floats().map(repr),
    st.floats(-200, 200).map(lambda v: f"{v:.3f}"),
    st.integers(-(10**40), 10**40).map(str),
    st.integers(-3, 14).map(str),
    st.sampled_from(["car", "Truck", "plane", "small-vehicle", "nan", "-inf", "1e309", "0x10", "1_0", "٣", ""]),
    st.text(min_size=1, max_size=6),
)
LINES = st.one_of(
    st.text(max_size=60),
    st.lists(TOKENS, max_size=12).map(" ".join),
    st.lists(TOKENS, min_size=7, max_size=9).map(",".join),
)


@settings(max_examples=200, deadline=None, database=None)
@given(line=LINES)
def test_fuzz_line_parsers_raise_only_dataset_errors(line: str) -> None:
    for parse, names in PARSERS:
        try:
            record = parse(line, "'fuzz.txt' line 7", names)
            if record is not None:
                check_in_image(record, (100, 80), clip=True)
                check_in_image(record, (100, 80))
        except DatasetError as exc:
            assert "'fuzz.txt' line 7: " in str(exc)


@settings(max_examples=200, deadline=None, database=None)
@given(coords=st.lists(st.floats(-1000, 1000), min_size=8, max_size=8))
def test_fuzz_corner_points_give_an_enclosing_canonical_rectangle(coords: list[float]) -> None:
    try:
        record = parse_evd4uav_line("0 " + _fmt(coords), "'fuzz.txt' line 1", EVD4UAV_CLASSES)
    except DatasetError as exc:
        assert "degenerate" in str(exc)
        return
    cx, cy, w, h, angle = record.rbox
    assert w >= h > 0 and -90 <= angle < 90
    x0, y0, x1, y1 = record.xyxy
    assert w * h <= (x1 - x0) * (y1 - y0) * (1 + 1e-9) + 1e-9  # never worse than the axis-aligned box
    t = math.radians(angle)
    pts = np.asarray(coords).reshape(4, 2) - (cx, cy)
    along, across = pts @ (math.cos(t), math.sin(t)), pts @ (-math.sin(t), math.cos(t))
    tol = 1e-6 * (1 + np.abs(pts).max())
    assert np.all(np.abs(along) <= w / 2 + tol) and np.all(np.abs(across) <= h / 2 + tol)


def test_min_area_rect_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for _ in range(100):
        pts = rng.uniform(0, 500, size=(4, 2)).astype(np.float32)
        (_, _), (w_ref, h_ref), _ = cv2.minAreaRect(pts)
        _, _, w, h, _ = min_area_rect(pts.astype(np.float64))
        assert math.isclose(w * h, w_ref * h_ref, rel_tol=1e-3)
