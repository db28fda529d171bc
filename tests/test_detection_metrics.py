"""Tests for advbench.detection: matching, ASR breakdowns, COCO mAP against pycocotools, the report grid."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from advbench.datasets.detection import DetectionSample, export_coco
from advbench.detection import (
    attack_success,
    coco_ground_truth,
    coco_map,
    coco_map_by,
    match_detected,
    save_detection_grid,
    write_coco_detections,
)
from advbench.detection.report import DETECTION_COLOURS, GT_COLOUR, PAD, TITLE_HEIGHT
from advbench.errors import ConfigError, InputError


def _sample(
    tmp_path: Path,
    name: str,
    boxes: list[list[float]],
    labels: list[int],
    *,
    size: tuple[int, int] = (64, 48),
    class_names: tuple[str, ...] = ("car", "large"),
    colours: list[str] | None = None,
    types: list[str] | None = None,
    altitude: str | None = None,
) -> DetectionSample:
    path = tmp_path / "images" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)
    return DetectionSample(
        image_id=name,
        image_path=path,
        image_size=size,
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=class_names,
        colours=colours,
        types=types,
        altitude=altitude,
    )


def _dets(boxes: list[list[float]], scores: list[float], labels: list[int] | None = None) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels if labels is not None else [0] * len(scores), dtype=torch.int64),
    }


# ------------------------------------------------------------------------------------------ match_detected
def test_match_iou_and_score_boundaries_are_inclusive() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    half = torch.tensor([[0.0, 0.0, 10.0, 5.0]])  # IoU = 50 / 100 = 0.5 exactly
    assert match_detected(gt, half, torch.tensor([0.5])).tolist() == [True]
    assert match_detected(gt, half, torch.tensor([0.5]), iou=0.51).tolist() == [False]
    assert match_detected(gt, half, torch.tensor([0.49])).tolist() == [False]
    assert match_detected(gt, half, torch.tensor([0.3]), score_threshold=0.3).tolist() == [True]


def test_match_is_one_to_one() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 12.0]])
    one = torch.tensor([[0.0, 0.0, 10.0, 11.0]])  # IoU 100/110 = 0.909 with gt0, 110/120 = 0.917 with gt1
    assert match_detected(gt, one, torch.tensor([0.9])).tolist() == [False, True]
    two = torch.cat([one, one])
    assert match_detected(gt, two, torch.tensor([0.9, 0.8])).tolist() == [True, True]


def test_match_is_greedy_in_score_order() -> None:
    # a = [0, 10], b = [4, 14] (all boxes 10 high).  x = [1, 11]: IoU 9/11 with a, 7/13 = 0.54 with b.
    # y = [-2, 8]: IoU 8/12 with a, 4/16 with b.  x has the higher score, so x takes a and y is left over;
    # matching in list order (y first) would give y -> a and x -> b, i.e. both found.
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]])
    dets = torch.tensor([[-2.0, 0.0, 8.0, 10.0], [1.0, 0.0, 11.0, 10.0]])
    assert match_detected(gt, dets, torch.tensor([0.8, 0.9])).tolist() == [True, False]
    assert match_detected(gt, dets, torch.tensor([0.9, 0.8])).tolist() == [True, True]


def test_match_empty_inputs_and_gradients() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert match_detected(gt, torch.zeros(0, 4), torch.zeros(0)).tolist() == [False]
    assert match_detected(torch.zeros(0, 4), gt, torch.ones(1)).shape == (0,)
    boxes = gt.clone().requires_grad_(True)
    out = match_detected(gt, boxes, torch.tensor([0.9], requires_grad=True))
    assert out.dtype == torch.bool and out.tolist() == [True]


def test_match_rejects_bad_input() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(InputError, match="det_boxes"):
        match_detected(gt, torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(InputError, match="scores"):
        match_detected(gt, gt, torch.zeros(2))
    with pytest.raises(InputError, match="x_max < x_min"):
        match_detected(gt, torch.tensor([[5.0, 0.0, 1.0, 4.0]]), torch.ones(1))
    with pytest.raises(ConfigError, match="iou"):
        match_detected(gt, gt, torch.ones(1), iou=0.0)


# ------------------------------------------------------------------------------------------- attack_success
@pytest.fixture()
def asr_case(tmp_path: Path) -> tuple[list[DetectionSample], list[dict], list[dict]]:
    a = _sample(tmp_path, "a", [[0, 0, 10, 10], [20, 20, 30, 30], [40, 30, 50, 40]], [0, 0, 1],
                colours=["White", "Black", "White"], types=["Car", "Car", "Bus"], altitude="50m")
    b = _sample(tmp_path, "b", [[0, 0, 10, 10], [20, 0, 30, 10]], [1, 0],
                colours=["Red", "Red"], types=["Truck", "Car"], altitude="70m")
    c = _sample(tmp_path, "c", [[0, 0, 10, 10]], [0], colours=["Blue"], types=["Car"], altitude="90m")
    d = _sample(tmp_path, "d", [[0, 0, 10, 10], [30, 30, 40, 40]], [0, 0])  # no altitude, colour or type
    clean = [
        _dets([[0, 0, 10, 10], [20, 20, 30, 30], [40, 30, 50, 40]], [0.9, 0.8, 0.7]),  # all 3 found
        _dets([[0, 0, 10, 10], [20, 0, 30, 10]], [0.9, 0.4]),  # b1 below the threshold
        _dets([[50, 30, 60, 40]], [0.99]),  # c0 missed
        _dets([[0, 0, 10, 10]], [0.9]),  # d0 found, d1 missed
    ]
    adv = [
        # a0 kept, a1 shifted to IoU 50/150 = 0.33, a2 kept at a lower score
        _dets([[0, 0, 10, 10], [25, 20, 35, 30], [40, 30, 50, 40]], [0.9, 0.95, 0.6]),
        _dets([[20, 0, 30, 10]], [0.9]),  # b0 lost; b1 found now but was not found on clean
        _dets([[0, 0, 10, 10]], [0.9]),
        _dets(torch.zeros(0, 4).tolist(), []),  # d0 lost, d1 missed again (never counts)
    ]
    return [a, b, c, d], clean, adv


def test_attack_success_hand_computed(asr_case) -> None:
    samples, clean, adv = asr_case
    result = attack_success(samples, clean, adv)
    assert [t.tolist() for t in result.detected_clean] == [[True, True, True], [True, False], [False], [True, False]]
    assert [t.tolist() for t in result.detected_adv] == [[True, False, True], [False, True], [True], [False, False]]
    # found on clean: a0 a1 a2 b0 d0 = 5; lost after: a1 b0 d0 = 3
    assert result.overall.to_dict() == {"vehicles": 8, "detected_clean": 5, "missed_after": 3, "asr": 0.6}
    assert result.asr == pytest.approx(0.6)
    assert {k: (v.detected_clean, v.missed_after) for k, v in result.by_altitude.items()} == {
        "50m": (3, 1), "70m": (1, 1), "90m": (0, 0)}
    assert result.by_altitude["50m"].asr == pytest.approx(1 / 3)
    assert result.by_altitude["70m"].asr == 1.0
    assert result.by_altitude["90m"].asr is None
    assert {k: v.to_dict()["asr"] for k, v in result.by_colour.items()} == {
        "Black": 1.0, "Blue": None, "Red": 1.0, "White": 0.0}
    assert {k: (v.vehicles, v.detected_clean, v.missed_after) for k, v in result.by_type.items()} == {
        "Bus": (1, 1, 0), "Car": (4, 2, 1), "Truck": (1, 1, 1)}
    # class labels differ from types: "large" holds the bus a2 (kept) and the truck b0 (lost)
    assert {k: (v.vehicles, v.detected_clean, v.missed_after) for k, v in result.by_class.items()} == {
        "car": (6, 3, 2), "large": (2, 2, 1)}
    assert [t.tolist() for t in result.broken()] == [[False, True, False], [True, False], [False], [True, False]]


def test_attack_success_to_dict_is_json(asr_case) -> None:
    samples, clean, adv = asr_case
    doc = json.loads(json.dumps(attack_success(samples, clean, adv).to_dict()))
    assert doc["by_altitude"]["90m"] == {"vehicles": 1, "detected_clean": 0, "missed_after": 0, "asr": None}
    assert doc["per_image"][1] == {"image_id": "b", "detected_clean": [True, False], "detected_adv": [False, True]}
    assert list(doc["by_altitude"]) == ["50m", "70m", "90m"]


def test_attack_success_altitudes_sort_by_number(tmp_path: Path) -> None:
    samples = [_sample(tmp_path, n, [[0, 0, 10, 10]], [0], altitude=n) for n in ("90m", "100m", "50m")]
    dets = [_dets([[0, 0, 10, 10]], [1.0])] * 3
    assert list(attack_success(samples, dets, dets).by_altitude) == ["50m", "90m", "100m"]


def test_attack_success_checks_inputs(asr_case) -> None:
    samples, clean, adv = asr_case
    with pytest.raises(InputError, match="adv_dets has 3 entries for 4 samples"):
        attack_success(samples, clean, adv[:3])
    bad = [dict(d) for d in clean]
    bad[0]["labels"] = torch.tensor([0, 1, 2])
    with pytest.raises(InputError, match=r"clean_dets\[0\].*labels must lie in \[0, 2\)"):
        attack_success(samples, bad, adv)
    with pytest.raises(InputError, match="lack"):
        attack_success(samples, [{"boxes": torch.zeros(0, 4)}] * 4, adv)


# ----------------------------------------------------------------------------------------------- COCO mAP
def _run_pycocotools(gt_file: Path, det_file: Path, image_ids: list[int] | None = None) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        dt = gt.loadRes(str(det_file))
        ev = COCOeval(gt, dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.fixture()
def coco_case(tmp_path: Path) -> tuple[list[DetectionSample], list[dict]]:
    samples = [
        _sample(tmp_path, "p", [[2, 3, 22, 18], [30, 10, 50, 40], [5, 25, 15, 45]], [0, 1, 0], altitude="50m"),
        _sample(tmp_path, "q", [[10, 10, 30, 20], [40, 5, 60, 25]], [0, 0], altitude="70m", size=(80, 40)),
        _sample(tmp_path, "r", [], [], altitude="50m"),  # no ground truth
        _sample(tmp_path, "s", [[0, 0, 16, 16]], [1], altitude="90m", size=(32, 32)),
    ]
    detections = [
        # p0 exact, p1 off by a few pixels, p2 missed, a low-score false positive
        _dets([[2, 3, 22, 18], [32, 12, 52, 41], [40, 40, 60, 47]], [0.95, 0.8, 0.3], [0, 1, 0]),
        # q0 with the wrong class, q1 loose (IoU 400/500 = 0.8)
        _dets([[10, 10, 30, 20], [40, 5, 60, 30]], [0.7, 0.9], [1, 0]),
        _dets([[1, 1, 11, 11]], [0.85], [0]),  # false positive on an image without ground truth
        _dets([[1, 0, 16, 17]], [0.6], [1]),
    ]
    return samples, detections


def test_coco_map_equals_pycocotools_on_exported_files(coco_case, tmp_path: Path) -> None:
    samples, detections = coco_case
    gt_file = export_coco(samples, tmp_path / "gt.json")
    det_file = write_coco_detections(samples, detections, tmp_path / "dets.json")
    stats = _run_pycocotools(gt_file, det_file)
    ours = coco_map(samples, detections)
    assert ours["AP50"] == pytest.approx(stats[1], abs=1e-12)
    assert ours["mAP"] == pytest.approx(stats[0], abs=1e-12)
    assert 0.0 < ours["mAP"] < ours["AP50"] < 1.0


def test_coco_map_by_altitude_equals_pycocotools_on_image_subsets(coco_case, tmp_path: Path) -> None:
    samples, detections = coco_case
    gt_file = export_coco(samples, tmp_path / "gt.json")
    det_file = write_coco_detections(samples, detections, tmp_path / "dets.json")
    per_altitude = coco_map_by(samples, detections, "altitude")
    assert list(per_altitude) == ["50m", "70m", "90m"]
    for altitude, image_ids in (("50m", [1, 3]), ("70m", [2]), ("90m", [4])):
        stats = _run_pycocotools(gt_file, det_file, image_ids)
        assert per_altitude[altitude]["AP50"] == pytest.approx(stats[1], abs=1e-12), altitude
        assert per_altitude[altitude]["mAP"] == pytest.approx(stats[0], abs=1e-12), altitude
    assert per_altitude["50m"] != per_altitude["70m"]


def test_coco_map_by_snow(coco_case) -> None:
    samples, detections = coco_case
    flagged = [dataclasses.replace(s, snow=flag) for s, flag in zip(samples, (True, False, None, True), strict=True)]
    per_snow = coco_map_by(flagged, detections, "snow")
    assert list(per_snow) == ["no_snow", "snow"]
    assert per_snow["snow"] == coco_map([samples[0], samples[3]], [detections[0], detections[3]])
    assert per_snow["no_snow"] == coco_map([samples[1]], [detections[1]])


def test_coco_ids_match_export_coco(coco_case, tmp_path: Path) -> None:
    samples, detections = coco_case
    exported = json.loads(export_coco(samples, tmp_path / "gt.json").read_text())
    ours = coco_ground_truth(samples)

    def key(doc: dict) -> list[tuple]:
        return [(a["id"], a["image_id"], a["category_id"], a["bbox"]) for a in doc["annotations"]]

    assert key(ours) == key(exported)
    assert [(i["id"], i["width"], i["height"]) for i in ours["images"]] == [
        (i["id"], i["width"], i["height"]) for i in exported["images"]]
    assert ours["categories"] == exported["categories"]
    written = json.loads(write_coco_detections(samples, detections, tmp_path / "d.json").read_text())
    assert written[4] == {"image_id": 2, "category_id": 1, "bbox": [40.0, 5.0, 20.0, 25.0], "score": 0.8999999761581421}


def test_coco_map_perfect_detections(coco_case) -> None:
    samples, _ = coco_case
    perfect = [{"boxes": s.boxes, "scores": torch.ones(len(s)), "labels": s.labels} for s in samples]
    assert coco_map(samples, perfect) == {"AP50": 1.0, "mAP": 1.0}


def test_coco_map_empty_detections(coco_case, tmp_path: Path) -> None:
    samples, _ = coco_case
    empty = [_dets([], []) for _ in samples]
    assert coco_map(samples, empty) == {"AP50": 0.0, "mAP": 0.0}
    assert json.loads(write_coco_detections(samples, empty, tmp_path / "e.json").read_text()) == []
    no_gt = [samples[2]]
    assert coco_map(no_gt, [_dets([], [])]) == {"AP50": None, "mAP": None}
    assert coco_map(no_gt, [_dets([[1, 1, 5, 5]], [0.9])]) == {"AP50": None, "mAP": None}
    # detections only on the image without ground truth: every ground-truth box is missed
    only_fp = [_dets([], []), _dets([], []), _dets([[1, 1, 11, 11]], [0.9]), _dets([], [])]
    assert coco_map(samples, only_fp) == {"AP50": 0.0, "mAP": 0.0}


def test_coco_map_checks_inputs(coco_case, tmp_path: Path) -> None:
    samples, detections = coco_case
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        coco_map_by(samples, detections, "colour")
    with pytest.raises(ConfigError, match="max_dets"):
        coco_map(samples, detections, max_dets=0)
    other = _sample(tmp_path, "o", [[0, 0, 4, 4]], [0], class_names=("bus",))
    with pytest.raises(InputError, match="class_names"):
        coco_map([*samples, other], [*detections, _dets([], [])])


# ------------------------------------------------------------------------------------------------- report
def test_save_detection_grid_size_and_boxes(tmp_path: Path) -> None:
    samples = [
        _sample(tmp_path, "g", [[10, 10, 30, 30]], [0]),
        _sample(tmp_path, "h", [[5, 5, 20, 20]], [0]),
        _sample(tmp_path, "big", [[0, 0, 100, 50]], [0], size=(200, 100)),
    ]
    clean = [_dets([[34, 20, 54, 40]], [0.9]), _dets([[30, 5, 50, 25]], [0.3]), _dets([], [])]
    adv = [_dets([], []) for _ in samples]
    images = [torch.full((3, s.image_size[1], s.image_size[0]), 0.5) for s in samples]
    out = save_detection_grid(samples, images, clean, images, adv, tmp_path / "out" / "grid.png", max_side=64)
    assert out == tmp_path / "out" / "grid.png"
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]  # no temp file left behind
    gray = (128, 128, 128)
    row1, row2, right = TITLE_HEIGHT + PAD, TITLE_HEIGHT + 2 * PAD + 48, 2 * PAD + 64
    with Image.open(out) as img:
        # 64x48 images stay, 200x100 shrinks to 64x32: two 64-wide columns, rows 48 + 48 + 32 high
        assert img.size == (2 * 64 + 3 * PAD, TITLE_HEIGHT + 48 + 48 + 32 + 4 * PAD)
        # ground truth [10, 10, 30, 30]: its left edge is green in both columns
        assert img.getpixel((PAD + 10, row1 + 20)) == GT_COLOUR
        assert img.getpixel((right + 10, row1 + 20)) == GT_COLOUR
        # the clean detection [34, 20, 54, 40] is drawn in the first class colour; the patched column has none
        assert img.getpixel((PAD + 34, row1 + 30)) == DETECTION_COLOURS[0]
        assert img.getpixel((right + 34, row1 + 30)) == gray
        # a detection below the score threshold is not drawn
        assert img.getpixel((PAD + 30, row2 + 15)) == gray
        assert img.getpixel((PAD + 5, row2 + 12)) == GT_COLOUR
    one = save_detection_grid(samples, images, clean, images, adv, tmp_path / "one.png", max_images=1)
    with Image.open(one) as img:
        assert img.size == (2 * 64 + 3 * PAD, TITLE_HEIGHT + 48 + 2 * PAD)


def test_save_detection_grid_checks_images(asr_case, tmp_path: Path) -> None:
    samples, clean, adv = asr_case
    images = [torch.full((3, 48, 64), 0.5) for _ in samples]
    wrong = [*images[:-1], torch.full((3, 40, 64), 0.5)]
    with pytest.raises(InputError, match=r"images_adv\[3\].*shape"):
        save_detection_grid(samples, images, clean, wrong, adv, tmp_path / "g.png")
    bright = [*images[:-1], torch.full((3, 48, 64), 1.5)]
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        save_detection_grid(samples, bright, clean, images, adv, tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()
