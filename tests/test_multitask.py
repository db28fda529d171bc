"""Multi-task dense prediction: synthetic scenes and nyuv2 folders (and their errors), the multi-task net, hand-computed
metrics, metric changes and stealth success, training, checkpoints and `advbench train-multitask`."""

from __future__ import annotations

import doctest
import importlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advbench.datasets.catalog import list_datasets
from advbench.datasets.multitask import (
    MultiTaskData,
    generate_multitask_scenes,
    load_multitask_dataset,
    normals_from_depth,
    write_multitask_folder,
)
from advbench.errors import CheckpointError, ConfigError, DatasetError, InputError, MissingPathError, UnknownNameError
from advbench.models.multitask import MultiTaskNet, create_multitask_model
from advbench.models.registry import list_models
from advbench.models.task_heads import depth_loss, higher_is_better, normal_loss, seg_loss
from advbench.multitask.metrics import (
    MultiTaskMetrics,
    degradation,
    depth_abs_error,
    depth_rel_error,
    evaluate_multitask,
    metric_change,
    normal_angular_error,
    per_sample_metrics,
    seg_iou_counts,
    seg_miou,
    stealth_success,
)
from advbench.training.multitask import (
    baseline_metrics,
    flip_batch,
    load_multitask_model,
    save_multitask_model,
    train_multitask,
)

TINY = "synthetic-multitask:n=10,size=16"
TINY_NET = {"base": 4, "levels": 2}


#: Tiny tensors run fastest on one thread (see ``one_thread`` in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> MultiTaskData:
    return load_multitask_dataset(TINY, seed=0)


@pytest.fixture
def folder(tiny: MultiTaskData, tmp_path: Path) -> Path:
    return write_multitask_folder(tiny, tmp_path / "nyuv2")


# ------------------------------------------------------------------------------------------------ synthetic scenes

def test_synthetic_scenes_are_seeded_and_split_70_30(tiny: MultiTaskData) -> None:
    x1, t1, names = generate_multitask_scenes(4, 16, seed=3)
    x2, t2, _ = generate_multitask_scenes(4, 16, seed=3)
    x3, _, _ = generate_multitask_scenes(4, 16, seed=4)
    assert torch.equal(x1, x2) and all(torch.equal(t1[k], t2[k]) for k in t1) and not torch.equal(x1, x3)
    assert names == ("floor", "box", "sphere", "cylinder")
    assert x1.shape == (4, 3, 16, 16) and 0 <= float(x1.min()) and float(x1.max()) <= 1
    assert t1["seg"].dtype == torch.int64 and t1["seg"].shape == (4, 16, 16) and int(t1["seg"].max()) < 4
    assert t1["depth"].shape == (4, 1, 16, 16) and float(t1["depth"].min()) > 0
    assert t1["normal"].shape == (4, 3, 16, 16)
    assert tiny.tasks == ("seg", "depth", "normal") and tiny.num_classes == 4 and tiny.input_size == (16, 16)
    assert (len(tiny.x_train), len(tiny.x_test)) == (7, 3)
    again = load_multitask_dataset(TINY, seed=0)
    assert torch.equal(again.x_test, tiny.x_test) and torch.equal(again.targets_train["depth"],
                                                                  tiny.targets_train["depth"])
    assert load_multitask_dataset("synthetic-multitask:n=4,size=16,classes=5", seed=0).class_names[-1] == "wall"
    two = load_multitask_dataset("synthetic-multitask:n=4,size=16,classes=2", seed=0)
    assert two.class_names == ("floor", "box") and int(two.targets_train["seg"].max()) <= 1
    assert {"synthetic-multitask", "nyuv2"} <= set(list_datasets(task="multi-task dense prediction"))


def test_normals_of_a_tilted_plane_face_up_and_towards_the_camera() -> None:
    # A camera 1.5 m above a floor, pitched down by 50 degrees, focal 16 px on a 16x16 image: the floor's depth along
    # the optical axis is Z(v) = h / (v/f cos(p) + sin(p)), and its normal in camera coordinates (x right, y down,
    # z forward) is the world's "up" (0, -1, 0) turned by the pitch: (0, -cos(p), -sin(p)).
    pitch, h, f = math.radians(50), 1.5, 16.0
    v = (torch.arange(16, dtype=torch.float64) + 0.5 - 8) / f
    z = (h / (v * math.cos(pitch) + math.sin(pitch))).view(1, 1, 16, 1).expand(1, 1, 16, 16).float()
    normal = normals_from_depth(z, focal=f)
    expected = torch.tensor([0.0, -math.cos(pitch), -math.sin(pitch)]).view(1, 3, 1, 1)
    assert torch.allclose(normal, expected.expand_as(normal), atol=1e-5)
    flat = normals_from_depth(torch.full((1, 1, 4, 4), 2.0), focal=4.0)  # a wall facing the camera
    assert torch.allclose(flat, torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4), atol=1e-6)
    holes = torch.full((1, 1, 4, 4), 2.0)
    holes[0, 0, 1, 2] = 0  # invalid depth -> invalid (zero) normal
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    mask[0, 3, 3] = False
    out = normals_from_depth(holes, focal=4.0, valid=mask)
    assert float(out[0, :, 1, 2].abs().sum()) == 0 and float(out[0, :, 3, 3].abs().sum()) == 0
    with pytest.raises(ConfigError, match="focal"):
        normals_from_depth(holes, focal=0)


def test_synthetic_depth_and_normals_are_consistent() -> None:
    x, t, _ = generate_multitask_scenes(6, 32, seed=1)
    seg, depth, normal = t["seg"], t["depth"], t["normal"]
    valid = normal.abs().sum(1) > 0
    norms = normal.norm(dim=1)[valid]
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    assert 0.7 < float(valid.float().mean()) < 1  # only surface boundaries are invalid
    recomputed = normals_from_depth(depth, focal=32.0)  # the stored normals are those of the depth map
    assert torch.allclose(recomputed.permute(1, 0, 2, 3)[:, valid], normal.permute(1, 0, 2, 3)[:, valid], atol=1e-4)
    for i in range(6):
        floor = (seg[i] == 0) & valid[i]
        n_floor = normal[i][:, floor]
        assert bool((n_floor[1] < -0.5).all()) and bool((n_floor[2] < 0).all())  # up and towards the camera
        assert float((n_floor - n_floor[:, :1]).abs().max()) < 1e-3  # one plane, one normal
        rows = torch.arange(32).view(32, 1).expand(32, 32)
        top, bottom = depth[i, 0][floor & (rows < 16)], depth[i, 0][floor & (rows >= 16)]
        assert float(top.mean()) > float(bottom.mean())  # the tilted floor recedes towards the top of the image
        objects = seg[i] > 0
        assert bool(objects.any()) and float(depth[i, 0][objects].mean()) < float(depth[i, 0][seg[i] == 0].max())
    assert float(x.std()) > 0.05


def test_multitask_data_validates_targets(tiny: MultiTaskData) -> None:
    x, targets = tiny.x_train, dict(tiny.targets_train)
    names = tiny.class_names
    with pytest.raises(DatasetError, match="int64"):
        MultiTaskData(x, {**targets, "seg": targets["seg"].float()}, x, targets, class_names=names)
    with pytest.raises(DatasetError, match="unit vectors"):
        MultiTaskData(x, {**targets, "normal": targets["normal"] * 2}, x, targets, class_names=names)
    with pytest.raises(DatasetError, match="same tasks"):
        MultiTaskData(x, {"depth": targets["depth"]}, x, targets, class_names=names)
    with pytest.raises(DatasetError, match="class id 7"):
        MultiTaskData(x, {**targets, "seg": torch.full_like(targets["seg"], 7)}, x, targets, class_names=names)
    with pytest.raises(UnknownNameError, match="known tasks: depth, normal, seg"):
        MultiTaskData(x, {"edges": targets["depth"]}, x, {"edges": targets["depth"]})
    only_depth = MultiTaskData(x, {"depth": targets["depth"]}, x, {"depth": targets["depth"]})
    assert only_depth.tasks == ("depth",) and only_depth.num_classes == 0


# ---------------------------------------------------------------------------------------------------- nyuv2 folders

def _assert_close_to(data: MultiTaskData, back: MultiTaskData) -> None:
    assert back.tasks == data.tasks and back.class_names == data.class_names
    assert (back.x_train - data.x_train).abs().max() <= 1 / 510 + 1e-6
    assert torch.equal(back.targets_train["seg"], data.targets_train["seg"])
    assert torch.equal(back.targets_test["seg"], data.targets_test["seg"])
    assert float((back.targets_test["depth"] - data.targets_test["depth"]).abs().max()) <= 0.0005 + 1e-6
    valid = data.targets_test["normal"].abs().sum(1) > 0
    assert torch.equal(back.targets_test["normal"].abs().sum(1) > 0, valid)
    cos = (back.targets_test["normal"] * data.targets_test["normal"]).sum(1)[valid]
    assert float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).max()) < 0.6


def test_nyuv2_round_trip(tiny: MultiTaskData, folder: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in (folder / "train").iterdir()) == ["depth", "label", "normal", "rgb"]
    assert (folder / "classes.txt").read_text().split() == list(tiny.class_names)
    back = load_multitask_dataset(f"nyuv2:{folder}")
    _assert_close_to(tiny, back)
    npy = write_multitask_folder(tiny, tmp_path / "npy", depth_format="npy")
    assert torch.equal(load_multitask_dataset(f"nyuv2:{npy}").targets_train["depth"], tiny.targets_train["depth"])
    small = load_multitask_dataset(f"nyuv2:{folder}?size=8")
    assert small.input_size == (8, 8) and small.targets_train["normal"].shape == (7, 3, 8, 8)
    assert set(small.targets_train["seg"].unique().tolist()) <= set(tiny.targets_train["seg"].unique().tolist())


def test_nyuv2_flat_folder_is_split_by_seed(tiny: MultiTaskData, tmp_path: Path) -> None:
    flat = write_multitask_folder(tiny, tmp_path / "flat", layout="flat")
    assert (flat / "rgb").is_dir() and not (flat / "train").exists()
    a = load_multitask_dataset(f"nyuv2:{flat}", seed=0)
    b = load_multitask_dataset(f"nyuv2:{flat}", seed=0)
    c = load_multitask_dataset(f"nyuv2:{flat}", seed=1)
    assert (len(a.x_train), len(a.x_test)) == (7, 3) and torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.x_train, c.x_train)
    everything = torch.cat([tiny.x_train, tiny.x_test])
    assert torch.allclose(torch.cat([a.x_train, a.x_test]).sum(0), everything.sum(0), atol=0.05)  # same images
    (flat / "classes.txt").unlink()  # then the number of classes is the largest label + 1
    assert load_multitask_dataset(f"nyuv2:{flat}").class_names == ("class0", "class1", "class2", "class3")
    assert len(load_multitask_dataset(f"nyuv2:{flat}?classes=6").class_names) == 6
    shutil.rmtree(flat / "label")
    shutil.rmtree(flat / "normal")
    assert load_multitask_dataset(f"nyuv2:{flat}").tasks == ("depth",)


def _save_grey(path: Path, size: int, value: int = 0, mode: str = "L") -> None:
    Image.fromarray(np.full((size, size), value, dtype=np.uint8 if mode == "L" else np.uint16)).save(path)


BREAKERS = {
    "missing label": (lambda f: (f / "train/label/0001.png").unlink(), DatasetError, "train/rgb/0001.png"),
    "depth without image": (lambda f: shutil.copy(f / "train/depth/0000.png", f / "train/depth/0099.png"),
                            DatasetError, "train/depth/0099.png"),
    "normal of another size": (lambda f: Image.new("RGB", (8, 8), (128, 128, 255)).save(f / "test/normal/0002.png"),
                               DatasetError, "test/normal/0002.png"),
    "colour label": (lambda f: Image.new("RGB", (16, 16)).save(f / "train/label/0003.png"), DatasetError,
                     "train/label/0003.png"),
    "8-bit depth": (lambda f: _save_grey(f / "test/depth/0001.png", 16, 100), DatasetError, "test/depth/0001.png"),
    "negative npy depth": (lambda f: (f / "train/depth/0002.png").unlink() or np.save(
        f / "train/depth/0002.npy", -np.ones((16, 16), dtype=np.float32)), DatasetError, "train/depth/0002.npy"),
    "grey normal": (lambda f: _save_grey(f / "train/normal/0000.png", 16), DatasetError, "train/normal/0000.png"),
    "label beyond classes.txt": (lambda f: _save_grey(f / "test/label/0000.png", 16, 9), DatasetError,
                                 "test/label/0000.png"),
    "same stem twice": (lambda f: np.save(f / "train/depth/0004.npy", np.ones((16, 16), dtype=np.float32)),
                        DatasetError, "train/depth/0004"),
    "no test split": (lambda f: shutil.rmtree(f / "test"), MissingPathError, "test"),
    "no rgb": (lambda f: shutil.rmtree(f / "train/rgb"), MissingPathError, "train/rgb"),
    "no task folder": (lambda f: [shutil.rmtree(f / s / t) for s in ("train", "test")
                                  for t in ("label", "depth", "normal")], DatasetError, "none of the task folders"),
    "images of two sizes": (lambda f: [Image.new("RGB", (24, 24)).save(f / "train/rgb/0005.png")]
                            + [Image.new(m, (24, 24)).save(f / f"train/{t}/0005.png")
                               for t, m in (("label", "L"), ("normal", "RGB"))]
                            + [Image.fromarray(np.ones((24, 24), np.uint16)).save(f / "train/depth/0005.png")],
                            DatasetError, "?size=N"),
}


@pytest.mark.parametrize("case", sorted(BREAKERS))
def test_nyuv2_errors_name_the_file(case: str, folder: Path) -> None:
    breaker, error, needle = BREAKERS[case]
    breaker(folder)
    with pytest.raises(error) as info:
        load_multitask_dataset(f"nyuv2:{folder}")
    assert needle in str(info.value)


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match="nowhere"):
        load_multitask_dataset(f"nyuv2:{tmp_path / 'nowhere'}")
    with pytest.raises(UnknownNameError, match="nyuv2, synthetic-multitask"):
        load_multitask_dataset("cityscapes:/data")
    with pytest.raises(DatasetError, match="unknown option 'colour'"):
        load_multitask_dataset("synthetic-multitask:colour=3")
    with pytest.raises(DatasetError, match="'classes' must be between 2 and 5"):
        load_multitask_dataset("synthetic-multitask:n=4,classes=9")
    with pytest.raises(DatasetError, match="needs a folder"):
        load_multitask_dataset("nyuv2:")
    with pytest.raises(DatasetError, match="seed"):
        load_multitask_dataset(TINY, seed="0")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------- model

def test_model_heads_shapes_and_registry() -> None:
    net = create_multitask_model("mtl-unet", ("depth", "seg"), num_classes=3, **TINY_NET)
    out = net(torch.rand(2, 3, 16, 12))
    assert net.tasks == ("seg", "depth") and list(out) == ["seg", "depth"]
    assert out["seg"].shape == (2, 3, 16, 12) and out["depth"].shape == (2, 1, 16, 12)
    assert bool((out["depth"] > 0).all())
    full = MultiTaskNet(num_classes=5, base=4, levels=2)
    out = full(torch.rand(1, 3, 8, 8))
    assert full.tasks == ("seg", "depth", "normal") and out["seg"].shape == (1, 5, 8, 8)
    assert torch.allclose(out["normal"].norm(dim=1), torch.ones(1, 8, 8), atol=1e-5)
    normal_only = create_multitask_model("mtl-unet", "normal", **TINY_NET)
    assert list(normal_only(torch.rand(1, 3, 4, 4))) == ["normal"]
    assert list_models(task="multi-task dense prediction") == ["mtl-unet"]
    with pytest.raises(UnknownNameError, match="unknown task 'edges'; known tasks: depth, normal, seg"):
        create_multitask_model("mtl-unet", ("seg", "edges"))
    with pytest.raises(ConfigError, match="at least one task"):
        create_multitask_model("mtl-unet", ())
    with pytest.raises(ConfigError, match="valid options: base, levels"):
        create_multitask_model("mtl-unet", width=3)
    with pytest.raises(UnknownNameError, match="mtl-unet"):
        create_multitask_model("resnet-mtl")
    with pytest.raises(InputError, match="divisible by 4"):
        net(torch.rand(1, 3, 10, 10))
    with pytest.raises(InputError, match="B,3,H,W"):
        net(torch.rand(1, 1, 8, 8))


# ------------------------------------------------------------------------------------------------ hand-computed metrics

# Two 3x3 images, classes 0..2 (255 = ignore).  Image 0, row by row:
#   gt   = 0 0 1 / 0 1 1 / 2 2 255      pred = 0 1 1 / 0 1 1 / 2 0 0
#   class 0: pred {(0,0),(1,0),(2,1)}, gt {(0,0),(0,1),(1,0)} (the ignored (2,2) counts for nothing):
#            I = 2, U = 4 -> 0.5
#   class 1: pred {(0,1),(0,2),(1,1),(1,2)}, gt {(0,2),(1,1),(1,2)}: I = 3, U = 4 -> 0.75
#   class 2: pred {(2,0)}, gt {(2,0),(2,1)}: I = 1, U = 2 -> 0.5        mIoU = (0.5 + 0.75 + 0.5) / 3 = 7/12
# Image 1: gt all 0, pred all 1: class 0 I = 0, U = 9; class 1 I = 0, U = 9; class 2 absent -> mIoU = 0.
# Over the set: class 0 I = 2, U = 13; class 1 I = 3, U = 13; class 2 I = 1, U = 2
#   -> mIoU = (2/13 + 3/13 + 1/2) / 3 (not the mean of the per-image values, 7/24).
# Pixel accuracy: 6 of 8 labelled pixels in image 0, 0 of 9 in image 1 -> 6/17.
SEG_GT = torch.tensor([[[0, 0, 1], [0, 1, 1], [2, 2, 255]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]])
SEG_PRED = torch.tensor([[[0, 1, 1], [0, 1, 1], [2, 0, 0]], [[1, 1, 1], [1, 1, 1], [1, 1, 1]]])
SET_MIOU = (2 / 13 + 3 / 13 + 1 / 2) / 3

# Depth, one 2x2 image: gt = 1 2 / 0 4 (0 = invalid), pred = 1.5 1 / 3 5.
#   |errors| on valid pixels: 0.5, 1, 1 -> abs error 2.5/3; relative 0.5/1 + 1/2 + 1/4 = 1.25 -> 1.25/3.
DEPTH_GT = torch.tensor([[[[1.0, 2.0], [0.0, 4.0]]]])
DEPTH_PRED = torch.tensor([[[[1.5, 1.0], [3.0, 5.0]]]])

# Normals, one 2x2 image: gt (0,0,1), (1,0,0), (0,0,0) invalid, (0,1,0);
#   pred (0,0,1) -> 0 deg; (0,1,0) -> 90 deg; anything; 2 (0, cos 20, sin 20) (not unit) -> 20 deg.
#   mean angle (0 + 90 + 20) / 3; within 11.25: 1/3, within 22.5 and 30: 2/3; loss (0 + 1 + 1 - cos 20) / 3.
C20, S20 = math.cos(math.radians(20)), math.sin(math.radians(20))
NORMAL_GT = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).T.reshape(1, 3, 2, 2)
NORMAL_PRED = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.3, -0.2, 0.9],
                            [0.0, 2 * C20, 2 * S20]]).T.reshape(1, 3, 2, 2)


def test_segmentation_miou_by_hand() -> None:
    inter, union = seg_iou_counts(SEG_PRED, SEG_GT, num_classes=3)
    assert inter.tolist() == [[2, 3, 1], [0, 0, 0]] and union.tolist() == [[4, 4, 2], [9, 9, 0]]
    assert torch.allclose(seg_miou(SEG_PRED, SEG_GT, 3), torch.tensor([7 / 12, 0.0], dtype=torch.float64))
    assert torch.allclose(seg_miou(SEG_PRED, SEG_GT, 4), torch.tensor([7 / 12, 0.0], dtype=torch.float64))
    logits = torch.nn.functional.one_hot(SEG_PRED, 3).permute(0, 3, 1, 2).float()
    assert torch.allclose(seg_miou(logits, SEG_GT), torch.tensor([7 / 12, 0.0], dtype=torch.float64))
    assert math.isnan(float(seg_miou(SEG_PRED[:1], torch.full_like(SEG_GT[:1], 255), 3)[0]))
    metrics = MultiTaskMetrics(["seg"], num_classes=3)
    metrics.update({"seg": logits}, {"seg": SEG_GT})
    assert metrics.compute()["seg"] == pytest.approx(SET_MIOU)
    assert metrics.details()["seg"]["pixel_acc"] == pytest.approx(6 / 17)
    with pytest.raises(InputError, match="logits have 3 classes but num_classes=4"):
        MultiTaskMetrics(["seg"], num_classes=4).update({"seg": logits}, {"seg": SEG_GT})
    # loss: cross-entropy over labelled pixels only; with logits 0 everywhere every pixel costs log(3)
    loss = seg_loss(torch.zeros(2, 3, 3, 3, requires_grad=True), SEG_GT)
    assert loss.shape == (2,) and torch.allclose(loss, torch.full((2,), math.log(3)))
    assert float(seg_loss(torch.zeros(1, 3, 3, 3), torch.full_like(SEG_GT[:1], 255))[0]) == 0.0


def test_depth_errors_by_hand() -> None:
    assert depth_abs_error(DEPTH_PRED, DEPTH_GT).tolist() == pytest.approx([2.5 / 3])
    assert depth_rel_error(DEPTH_PRED, DEPTH_GT).tolist() == pytest.approx([1.25 / 3])
    pred = DEPTH_PRED.repeat(2, 1, 1, 1).requires_grad_(True)
    gt = torch.cat([DEPTH_GT, torch.zeros_like(DEPTH_GT)])  # the second image has no valid pixel
    loss = depth_loss(pred, gt)
    assert loss.tolist() == pytest.approx([2.5 / 3, 0.0])
    loss.sum().backward()
    assert pred.grad is not None and float(pred.grad[1].abs().sum()) == 0.0
    assert math.isnan(float(depth_abs_error(pred, gt)[1]))
    metrics = MultiTaskMetrics(["depth"])
    metrics.update({"depth": pred.detach()}, {"depth": gt})
    assert metrics.details()["depth"] == pytest.approx({"abs_err": 2.5 / 3, "rel_err": 1.25 / 3})


def test_normal_errors_by_hand() -> None:
    assert normal_angular_error(NORMAL_PRED, NORMAL_GT).tolist() == pytest.approx([110 / 3])
    assert normal_loss(NORMAL_PRED, NORMAL_GT).tolist() == pytest.approx([(2 - C20) / 3])
    metrics = MultiTaskMetrics(["normal"])
    metrics.update({"normal": NORMAL_PRED}, {"normal": NORMAL_GT})
    assert metrics.details()["normal"] == pytest.approx(
        {"angle_err": 110 / 3, "within_11.25": 1 / 3, "within_22.5": 2 / 3, "within_30": 2 / 3})
    assert float(normal_angular_error(torch.zeros(1, 3, 2, 2), NORMAL_GT)[0]) == pytest.approx(90.0)


def test_metrics_accumulate_merge_and_evaluate() -> None:
    class Fixed(torch.nn.Module):
        tasks, num_classes = ("seg", "depth"), 3

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            i = int(x[0, 0, 0, 0])
            return {"seg": torch.nn.functional.one_hot(SEG_PRED[i:i + len(x)], 3).permute(0, 3, 1, 2).float(),
                    "depth": torch.cat([DEPTH_PRED, DEPTH_PRED])[i:i + len(x)]}

    x = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, 3, 3)
    targets = {"seg": SEG_GT, "depth": torch.cat([DEPTH_GT, DEPTH_GT * 2])}
    # image 1's depth: gt 2 4 / 0 8, pred 1.5 1 / 3 5 -> |errors| 0.5, 3, 3; pooled with image 0: (2.5 + 6.5) / 6
    model = Fixed().train()
    one_by_one = evaluate_multitask(model, x, targets, batch_size=1)
    assert one_by_one == pytest.approx({"seg": SET_MIOU, "depth": 9 / 6}) and model.training
    assert evaluate_multitask(model, x, targets, batch_size=2) == pytest.approx(one_by_one)
    first, second = MultiTaskMetrics(["depth", "seg"], num_classes=3), MultiTaskMetrics(["seg", "depth"], num_classes=3)
    first.update(model(x[:1]), {k: v[:1] for k, v in targets.items()})
    second.update(model(x[1:]), {k: v[1:] for k, v in targets.items()})
    assert first.merge(second).compute() == pytest.approx(one_by_one)
    first.reset()
    assert math.isnan(first.compute()["depth"])
    assert per_sample_metrics(model(x), targets)["depth"].tolist() == pytest.approx([2.5 / 3, 6.5 / 3])
    with pytest.raises(ConfigError, match="not among the available tasks"):
        evaluate_multitask(model, x, targets, tasks=["normal"])
    with pytest.raises(ConfigError, match="num_classes"):
        MultiTaskMetrics(["seg"])


# ----------------------------------------------------------------------------------------- change and stealth

CLEAN = {"seg": 0.5, "depth": 0.4, "normal": 20.0}
# seg 0.5 -> 0.25: 50% worse; depth 0.4 -> 0.42: 5% worse; normal 20 -> 18 degrees: 10% better.
ADV = {"seg": 0.25, "depth": 0.42, "normal": 18.0}


def test_metric_change_by_hand() -> None:
    change = metric_change(CLEAN, ADV)
    assert [higher_is_better(t) for t in ("seg", "depth", "normal")] == [True, False, False]
    assert change["seg"]["change"] == pytest.approx(-0.25) and change["seg"]["relative_change"] == pytest.approx(-0.5)
    assert change["seg"]["degradation"] == pytest.approx(0.5) and change["seg"]["higher_is_better"] is True
    assert change["depth"]["relative_change"] == pytest.approx(0.05) and change["depth"]["degradation"] == \
        pytest.approx(0.05)
    assert change["normal"]["change"] == pytest.approx(-2.0) and change["normal"]["degradation"] == pytest.approx(-0.1)
    assert degradation("depth", 0.0, 0.0) == 0.0 and degradation("depth", 0.0, 0.1) == math.inf
    per_sample = degradation("seg", torch.tensor([0.5, 0.8]), torch.tensor([0.25, 0.8]))
    assert per_sample.tolist() == pytest.approx([0.5, 0.0])


def test_stealth_success_cases() -> None:
    assert stealth_success(CLEAN, ADV, "seg", margin=0.3, tolerance=0.1) is True
    assert stealth_success(CLEAN, ADV, "seg", margin=0.3, tolerance=0.01) is False  # depth got 5% worse
    assert stealth_success(CLEAN, ADV, "seg", margin=0.6, tolerance=0.1) is False  # seg only 50% worse
    assert stealth_success(CLEAN, ADV, "depth", margin=0.05, tolerance=0.0) is False  # seg got 50% worse
    better = {"seg": 0.6, "depth": 0.5, "normal": 20.0}  # depth 25% worse, seg improved, normal unchanged
    assert stealth_success(CLEAN, better, "depth", margin=0.2, tolerance=0.0) is True
    assert stealth_success(CLEAN, {**ADV, "depth": math.nan}, "seg", margin=0.3, tolerance=0.1) is False
    clean = {"seg": torch.tensor([0.5, 0.5]), "depth": torch.tensor([0.4, 0.4])}
    adv = {"seg": torch.tensor([0.2, 0.2]), "depth": torch.tensor([0.41, 0.6])}
    assert stealth_success(clean, adv, "seg", margin=0.5, tolerance=0.1).tolist() == [True, False]


def test_stealth_success_errors() -> None:
    with pytest.raises(ConfigError, match="tolerance must be a finite number >= 0"):
        stealth_success(CLEAN, ADV, "seg", margin=0.3, tolerance=-0.1)
    with pytest.raises(ConfigError, match="margin"):
        stealth_success(CLEAN, ADV, "seg", margin=-1, tolerance=0.1)
    with pytest.raises(UnknownNameError, match="unknown target task 'segm'; the model's tasks are seg, depth, normal"):
        stealth_success(CLEAN, ADV, "segm", margin=0.3, tolerance=0.1)
    two = {"seg": 0.5, "depth": 0.4}
    with pytest.raises(ConfigError, match=r"'normal' is not among the model's tasks \(seg, depth\)"):
        stealth_success(two, two, "normal", margin=0.3, tolerance=0.1)
    with pytest.raises(ConfigError, match="measure the same tasks"):
        stealth_success(two, CLEAN, "seg", margin=0.3, tolerance=0.1)
    with pytest.raises(UnknownNameError, match="known tasks"):
        metric_change({"edges": 1.0}, {"edges": 2.0})


# ---------------------------------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def trained(tiny: MultiTaskData):
    return train_multitask(tiny, tasks=("seg", "normal"), epochs=2, batch_size=4, model_options=TINY_NET,
                           progress=False)


def test_training_smoke(tiny: MultiTaskData, trained) -> None:
    model, summary = trained
    assert model.tasks == ("seg", "normal") and not model.training and model.class_names == tiny.class_names
    assert set(summary["test_metrics"]) == {"seg", "normal"} == set(summary["baseline_test_metrics"])
    assert summary["n_train"] == 7 and summary["steps"] == 4 and math.isfinite(summary["final_loss"])
    assert summary["higher_is_better"] == {"seg": True, "normal": False}
    assert 0 <= summary["test_metrics"]["seg"] <= 1 and 0 <= summary["test_metrics"]["normal"] <= 180
    again, _ = train_multitask(tiny, tasks=("seg", "normal"), epochs=2, batch_size=4, model_options=TINY_NET,
                               progress=False)
    x = tiny.x_test[:1]
    with torch.no_grad():
        assert torch.equal(again(x)["seg"], model(x)["seg"])  # the same seed gives the same model
    depth_only, summary = train_multitask(tiny, tasks="depth", epochs=1, batch_size=8, model_options=TINY_NET,
                                          progress=False)
    assert depth_only.tasks == ("depth",) and set(summary["test_metrics"]) == {"depth"}
    with pytest.raises(UnknownNameError, match="known tasks"):
        train_multitask(tiny, tasks=("edges",), epochs=1, progress=False)
    with pytest.raises(ConfigError, match="epochs"):
        train_multitask(tiny, epochs=0, progress=False)


def test_flip_and_baseline(tiny: MultiTaskData) -> None:
    x, targets = flip_batch(tiny.x_train[:2], {k: v[:2] for k, v in tiny.targets_train.items()})
    assert torch.equal(x, tiny.x_train[:2].flip(-1))
    assert torch.equal(targets["normal"][:, 0], -tiny.targets_train["normal"][:2, 0].flip(-1))
    assert torch.equal(targets["normal"][:, 1:], tiny.targets_train["normal"][:2, 1:].flip(-1))
    base = baseline_metrics(tiny, tiny.tasks)
    assert set(base) == {"seg", "depth", "normal"} and 0 < base["seg"] < 1


def test_checkpoint_round_trip(trained, tmp_path: Path) -> None:
    model, summary = trained
    path = save_multitask_model(model, tmp_path / "mt.safetensors", {"dataset": TINY, "training": summary})
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["task"] == "multitask" and sidecar["arch"] == "mtl-unet" and sidecar["tasks"] == ["seg", "normal"]
    assert sidecar["num_classes"] == 4 and sidecar["input_size"] == [16, 16]
    assert sidecar["class_names"] == ["floor", "box", "sphere", "cylinder"]
    loaded = load_multitask_model(path)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded(x).values(), model(x).values(), strict=True))
    assert loaded.tasks == model.tasks and not loaded.training and loaded.normalization() == model.normalization()
    sidecar["tasks"] = ["seg", "depth", "normal"]
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="does not match multi-task architecture"):
        load_multitask_model(path)
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_multitask_model(model, tmp_path / "mt.pt")


def test_classifier_checkpoint_is_refused(digits_model) -> None:
    with pytest.raises(CheckpointError, match="classifier checkpoint, not a multi-task model") as info:
        load_multitask_model(digits_model.checkpoint_file)
    assert digits_model.checkpoint_file in str(info.value) and "train-multitask" in str(info.value)


# ---------------------------------------------------------------------------------------------------------- CLI

def test_cli_train_multitask(run_cli, tmp_path: Path) -> None:
    ckpt = tmp_path / "mt.safetensors"
    args = ["train-multitask", "--dataset", "synthetic-multitask:n=8,size=16", "--tasks", "depth,seg", "--epochs",
            "1", "--batch-size", "4", "--base", "4", "--levels", "2", "--out", str(ckpt)]
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["checkpoint"] == str(ckpt) and summary["tasks"] == ["seg", "depth"] and summary["n_train"] == 6
    loaded = load_multitask_model(ckpt)
    assert loaded.tasks == ("seg", "depth") and loaded.options == TINY_NET
    code, out, err = run_cli(*args[:-1], str(tmp_path / "again.safetensors"))
    assert code == 0 and "miou" in out and "abs_err" in out and "constant baseline" in out and "saved" in err
    code, _, err = run_cli(*args[:-1], str(tmp_path / "mt.pt"))
    assert code == 2 and ".safetensors" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(*args[:4], "seg,edges", *args[5:])
    assert code == 2 and "unknown task 'edges'" in err and "depth, normal, seg" in err
    code, _, err = run_cli("train-multitask", "--dataset", f"nyuv2:{tmp_path / 'none'}", "--out", str(ckpt))
    assert code == 2 and "none" in err


# ---------------------------------------------------------------------------------------------------- doctests

@pytest.mark.parametrize("name", ["advbench.multitask.metrics", "advbench.models.multitask"])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
