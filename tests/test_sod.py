"""Salient object detection: data loaders and their errors, the U-Net, hand-computed metrics, training, checkpoints
and `advbench train-sod`."""

from __future__ import annotations

import doctest
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advbench.datasets.sod import SODData, generate_sod_scenes, load_sod_dataset, write_sod_folder
from advbench.errors import CheckpointError, ConfigError, DatasetError, InputError, MissingPathError, UnknownNameError
from advbench.models.sod import create_sod_model
from advbench.models.unet import UNet
from advbench.sod.metrics import (
    SODMetrics,
    adaptive_e_measure,
    adaptive_f_measure,
    e_measure_curve,
    f_measure_curve,
    mae,
    precision_recall_curve,
    s_measure,
    sod_metrics,
)
from advbench.training.sod import load_sod_model, save_sod_model, train_sod

TINY = "synthetic-sod:n=10,size=32"
TINY_UNET = {"base": 4, "depth": 2}


#: Tiny tensors run fastest on one thread (see ``one_thread`` in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> SODData:
    return load_sod_dataset(TINY, seed=0)


@pytest.fixture
def folder(tiny: SODData, tmp_path: Path) -> Path:
    return write_sod_folder(tiny, tmp_path / "eorssd")


# ------------------------------------------------------------------------------------------------------------ data

def test_synthetic_scenes_are_seeded_binary_and_split_70_30(tiny: SODData) -> None:
    x1, m1 = generate_sod_scenes(6, 32, seed=3)
    x2, m2 = generate_sod_scenes(6, 32, seed=3)
    x3, _ = generate_sod_scenes(6, 32, seed=4)
    assert torch.equal(x1, x2) and torch.equal(m1, m2) and not torch.equal(x1, x3)
    assert x1.shape == (6, 3, 32, 32) and m1.shape == (6, 1, 32, 32)
    assert 0 <= float(x1.min()) and float(x1.max()) <= 1
    assert set(m1.unique().tolist()) == {0.0, 1.0}
    assert bool((m1.flatten(1).sum(1) > 0).all())  # every scene has a salient object
    fg = x1.permute(1, 0, 2, 3)[:, m1[:, 0] > 0].mean(1)
    bg = x1.permute(1, 0, 2, 3)[:, m1[:, 0] == 0].mean(1)
    assert float((fg - bg).abs().max()) > 0.1  # objects stand out from the background
    assert (len(tiny.x_train), len(tiny.x_test)) == (7, 3) and tiny.input_size == (32, 32)
    again = load_sod_dataset(TINY, seed=0)
    assert torch.equal(again.x_test, tiny.x_test) and torch.equal(again.m_train, tiny.m_train)


@pytest.mark.parametrize("layout", ["eorssd", "split-folders"])
def test_write_then_load_round_trip(tiny: SODData, tmp_path: Path, layout: str) -> None:
    root = write_sod_folder((tiny.x_train, tiny.m_train, tiny.x_test, tiny.m_test), tmp_path / layout, layout=layout)
    names = ("train-images", "test-labels") if layout == "eorssd" else ("train/images", "test/masks")
    assert all((root / n / "0000.png").exists() for n in names)
    back = load_sod_dataset(f"eorssd:{root}?size=32")
    assert torch.equal(back.m_train, tiny.m_train) and torch.equal(back.m_test, tiny.m_test)
    assert float((back.x_train - tiny.x_train).abs().max()) <= 0.5 / 255 + 1e-6
    small = load_sod_dataset(f"eorssd:{root}?size=16")
    assert small.x_test.shape == (3, 3, 16, 16) and small.m_test.shape == (3, 1, 16, 16)
    assert set(small.m_train.unique().tolist()) <= {0.0, 1.0}


def test_write_refuses_a_used_folder(tiny: SODData, folder: Path) -> None:
    with pytest.raises(ConfigError, match="overwrite=True"):
        write_sod_folder(tiny, folder)
    write_sod_folder(tiny, folder, overwrite=True)
    with pytest.raises(ConfigError, match="layout"):
        write_sod_folder(tiny, folder / "x", layout="voc")


def test_masks_of_0_and_1_are_accepted(folder: Path) -> None:
    path = folder / "train-labels" / "0000.png"
    ones = (np.asarray(Image.open(path)) > 0).astype(np.uint8)
    Image.fromarray(ones, mode="L").save(path)
    data = load_sod_dataset(f"eorssd:{folder}?size=32")
    assert torch.equal(data.m_train[0, 0], torch.from_numpy(ones).float())


def test_mask_of_another_size_is_named(folder: Path) -> None:
    mask = folder / "test-labels" / "0001.png"
    Image.new("L", (20, 32)).save(mask)
    with pytest.raises(DatasetError, match="0001.png") as info:
        load_sod_dataset(f"eorssd:{folder}")
    message = str(info.value)
    assert str(folder / "test-images" / "0001.png") in message and str(mask) in message
    assert "32x32" in message and "20x32" in message


def test_grey_mask_is_refused_with_the_fix_and_threshold_option_accepts_it(folder: Path) -> None:
    mask = folder / "train-labels" / "0002.png"
    grey = np.asarray(Image.open(mask)).copy()
    grey[0, :4] = 128
    Image.fromarray(grey, mode="L").save(mask)
    with pytest.raises(DatasetError, match="not binary") as info:
        load_sod_dataset(f"eorssd:{folder}?size=32")
    assert str(mask) in str(info.value) and "128" in str(info.value) and "threshold" in str(info.value)
    data = load_sod_dataset(f"eorssd:{folder}?size=32&threshold=128")
    assert float(data.m_train[2, 0, 0, :4].min()) == 1.0


def test_image_without_mask_and_mask_without_image(folder: Path) -> None:
    (folder / "train-labels" / "0003.png").unlink()
    with pytest.raises(DatasetError, match="no mask") as info:
        load_sod_dataset(f"eorssd:{folder}")
    assert str(folder / "train-images" / "0003.png") in str(info.value)
    (folder / "train-images" / "0003.png").unlink()
    (folder / "test-images" / "0000.png").unlink()
    with pytest.raises(DatasetError, match="no image") as info:
        load_sod_dataset(f"eorssd:{folder}")
    assert str(folder / "test-labels" / "0000.png") in str(info.value)


def test_missing_folders(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match="nowhere"):
        load_sod_dataset(f"eorssd:{tmp_path / 'nowhere'}")
    with pytest.raises(MissingPathError, match="train-images"):
        load_sod_dataset(f"eorssd:{folder / 'train-images'}")  # a folder without the layout
    for item in (folder / "test-labels").iterdir():
        item.unlink()
    (folder / "test-labels").rmdir()
    with pytest.raises(MissingPathError, match="test-labels"):
        load_sod_dataset(f"eorssd:{folder}")


def test_bad_specs_and_containers() -> None:
    with pytest.raises(UnknownNameError, match="eorssd"):
        load_sod_dataset("voc:/data")
    with pytest.raises(DatasetError, match="valid options"):
        load_sod_dataset("synthetic-sod:count=5")
    with pytest.raises(DatasetError, match="size"):
        load_sod_dataset("synthetic-sod:size=4")
    with pytest.raises(DatasetError, match="needs a folder"):
        load_sod_dataset("eorssd:")
    x, m = torch.rand(2, 3, 8, 8), torch.zeros(2, 1, 8, 8)
    with pytest.raises(DatasetError, match="m_train must hold only 0 and 1"):
        SODData(x, m + 0.5, x, m)
    with pytest.raises(DatasetError, match="x_test"):
        SODData(x, m, x * 2, m)


# ------------------------------------------------------------------------------------------------------------ U-Net

@pytest.mark.parametrize(("depth", "size"), [(1, (6, 10)), (2, (16, 8)), (3, (24, 32))])
def test_unet_keeps_the_spatial_size(depth: int, size: tuple[int, int]) -> None:
    net = UNet(base=4, depth=depth)
    assert net(torch.rand(2, 3, *size)).shape == (2, 1, *size)
    assert UNet(in_channels=1, out_channels=2, base=4, depth=depth)(torch.rand(1, 1, *size)).shape == (1, 2, *size)


def test_unet_size_and_channel_errors_name_the_sizes() -> None:
    net = UNet(base=4, depth=3)
    with pytest.raises(InputError, match="divisible by 8, got 30x32"):
        net(torch.rand(1, 3, 30, 32))
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="out_channels"):
        UNet(out_channels=1, residual=True)
    with pytest.raises(ConfigError, match="depth"):
        UNet(depth=0)


def test_residual_unet_starts_as_identity_and_learns() -> None:
    torch.manual_seed(0)
    net = UNet(in_channels=3, out_channels=3, base=4, depth=2, residual=True)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(net(x), x)
    loss = (net(x) - 0.5).pow(2).mean()
    loss.backward()
    assert float(net.head.weight.grad.abs().sum()) > 0
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    assert not torch.equal(net(x), x)


def test_unet_output_of_a_sample_does_not_depend_on_its_batch() -> None:
    torch.manual_seed(0)
    net = UNet(base=4, depth=2).train()
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(net(x)[1:2], net(x[1:2]), atol=1e-5)


def test_sod_model_registry() -> None:
    model = create_sod_model("unet-sod", **TINY_UNET)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 1, 16, 16)
    probs = model.probabilities(torch.rand(3, 3, 16, 16), batch_size=2)
    assert probs.shape == (3, 1, 16, 16) and 0 <= float(probs.min()) and float(probs.max()) <= 1
    with pytest.raises(ConfigError, match="valid options: base, depth"):
        create_sod_model("unet-sod", width=3)
    with pytest.raises(UnknownNameError, match="unet-sod"):
        create_sod_model("u2net")
    with pytest.raises(InputError, match="B,3,H,W"):
        model(torch.rand(3, 16, 16))


# ------------------------------------------------------------------------------------------------------- metrics
# The expected values below are worked out by hand; the comments give the arithmetic.

GT2 = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
PRED2 = torch.tensor([[0.9, 0.3], [0.7, 0.1]], dtype=torch.float64)
# pred >= k/255 keeps a pixel of value v for k <= floor(255 v): 0.1 -> k <= 25, 0.3 -> 76, 0.7 -> 178, 0.9 -> 229.
# So the 256 thresholds fall in five bands with 26, 51, 102, 51 and 26 thresholds.
BANDS = (26, 51, 102, 51, 26)


def expand(values: tuple[float, ...]) -> list[float]:
    """One value per band -> one value per threshold."""
    return [v for v, n in zip(values, BANDS, strict=True) for _ in range(n)]


def test_mae_by_hand() -> None:
    # |0.9-1| + |0.3-1| + |0.7-0| + |0.1-0| = 0.1 + 0.7 + 0.7 + 0.1 = 1.6, over 4 pixels
    assert mae(PRED2, GT2).tolist() == pytest.approx([0.4])


def test_precision_recall_and_f_measure_by_hand() -> None:
    # band: positives, TP, precision, recall (object = 2 pixels)
    # 1: all 4 -> TP 2, P 2/4, R 1;  2: {.9,.3,.7} -> TP 2, P 2/3, R 1;  3: {.9,.7} -> TP 1, P 1/2, R 1/2
    # 4: {.9} -> TP 1, P 1, R 1/2;   5: none -> P 0 (no positives), R 0
    p_bands, r_bands = (0.5, 2 / 3, 0.5, 1.0, 0.0), (1.0, 1.0, 0.5, 0.5, 0.0)
    f_bands = (1.3 * 0.5 * 1 / (0.3 * 0.5 + 1),  # 0.65 / 1.15 = 0.5652...
               1.3 * (2 / 3) / (0.3 * (2 / 3) + 1),  # 0.8667 / 1.2 = 0.7222...
               1.3 * 0.25 / (0.3 * 0.5 + 0.5),  # 0.325 / 0.65 = 0.5
               1.3 * 0.5 / (0.3 + 0.5),  # 0.65 / 0.8 = 0.8125
               0.0)
    precision, recall = precision_recall_curve(PRED2, GT2)
    assert precision[0].tolist() == pytest.approx(expand(p_bands))
    assert recall[0].tolist() == pytest.approx(expand(r_bands))
    curve = f_measure_curve(PRED2, GT2)[0]
    assert curve.tolist() == pytest.approx(expand(f_bands))
    assert float(curve.max()) == pytest.approx(0.8125)
    mean_f = (26 * 0.65 / 1.15 + 51 * (1.3 * 2 / 3) / 1.2 + 102 * 0.5 + 51 * 0.8125 + 26 * 0) / 256
    metrics = sod_metrics(PRED2, GT2)
    assert metrics["max_f"] == pytest.approx(0.8125) and metrics["mean_f"] == pytest.approx(mean_f)
    # adaptive threshold 2 * mean = 2 * (0.9 + 0.3 + 0.7 + 0.1) / 4 = 1.0: no pixel reaches it -> F = 0
    assert metrics["adaptive_f"] == 0.0
    # pred [[0.9, 0.1], [0, 0]]: threshold 2 * 0.25 = 0.5 keeps {0.9}: P = 1, R = 1/2 -> F = 0.65 / 0.8
    pred = torch.tensor([[0.9, 0.1], [0.0, 0.0]], dtype=torch.float64)
    assert adaptive_f_measure(pred, GT2).tolist() == pytest.approx([0.8125])


def _enhanced(a: float, b: float) -> float:
    """One pixel of the enhanced alignment matrix, straight from the definition (for the hand cases)."""
    xi = 0.0 if a == b == 0 else 2 * a * b / (a * a + b * b)
    return (1 + xi) ** 2 / 4


def test_e_measure_by_hand() -> None:
    # phi_GT = GT - 0.5 = +-0.5.  Band 1: FM all 1 -> phi_FM = 0 -> xi = 0 -> every pixel 1/4 -> E = 0.25.
    # Band 2: FM = [[1,1],[1,0]], mean 0.75 -> phi_FM = 0.25 or -0.75:
    #   (0.25, 0.5): xi = 0.25/0.3125 = 0.8 -> 1.8^2/4 = 0.81 (twice);  (0.25, -0.5): xi = -0.8 -> 0.2^2/4 = 0.01
    #   (-0.75, -0.5): xi = 0.75/0.8125 = 12/13 -> (25/13)^2/4 = 625/676
    band2 = (0.81 + 0.81 + 0.01 + 625 / 676) / 4
    # Band 3: FM = [[1,0],[1,0]], phi_FM = +-0.5: xi = 1, -1, -1, 1 -> 1, 0, 0, 1 -> E = 0.5
    # Band 4: FM = [[1,0],[0,0]], phi_FM = 0.75 or -0.25: 625/676, 0.01, 0.81, 0.81 -> the same as band 2
    # Band 5: FM all 0 -> phi_FM = 0 -> E = 0.25
    e_bands = (0.25, band2, 0.5, band2, 0.25)
    assert band2 == pytest.approx((_enhanced(0.25, 0.5) * 2 + _enhanced(0.25, -0.5) + _enhanced(-0.75, -0.5)) / 4)
    curve = e_measure_curve(PRED2, GT2)[0]
    assert curve.tolist() == pytest.approx(expand(e_bands))
    metrics = sod_metrics(PRED2, GT2)
    assert metrics["max_e"] == pytest.approx(band2)  # 0.6386...
    assert metrics["mean_e"] == pytest.approx((26 * 0.25 + 51 * band2 + 102 * 0.5 + 51 * band2 + 26 * 0.25) / 256)
    # adaptive: threshold 1.0 keeps nothing -> band 5 -> 0.25
    assert metrics["adaptive_e"] == pytest.approx(0.25)
    # 3x3, gt one pixel, FM = that pixel and one more: mean(GT) = 1/9, mean(FM) = 2/9
    gt = torch.zeros(3, 3, dtype=torch.float64)
    gt[0, 0] = 1
    pred = torch.zeros(3, 3, dtype=torch.float64)
    pred[0, 0], pred[2, 2] = 1.0, 1.0
    expected = (_enhanced(7 / 9, 8 / 9) + _enhanced(7 / 9, -1 / 9) + 7 * _enhanced(-2 / 9, -1 / 9)) / 9
    assert adaptive_e_measure(pred, gt).tolist() == pytest.approx([expected])  # threshold 2 * 2/9 = 0.44


def test_s_measure_by_hand() -> None:
    gt = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
    pred = torch.tensor([[0.8, 0.6, 0.2], [0.4, 0.2, 0.0], [0.0, 0.2, 0.0]], dtype=torch.float64)
    # object-aware: object values 0.8, 0.6, 0.4 -> mean 0.6, sample std sqrt(0.08 / 2) = 0.2
    o_fg = 2 * 0.6 / (0.6**2 + 1 + 0.2)  # 1.2 / 1.56
    # background values of 1 - pred: 0.8, 0.8, 1, 1, 0.8, 1 -> mean 0.9, sample std sqrt(0.06 / 5)
    o_bg = 2 * 0.9 / (0.9**2 + 1 + math.sqrt(0.06 / 5))
    s_object = (3 / 9) * o_fg + (6 / 9) * o_bg
    # region-aware: centroid of (1,1), (1,2), (2,1) (1-based) is (4/3, 4/3) -> X = Y = 1; blocks:
    # LT 1x1 ([0.8] vs [1]): all variances 0 -> numerator and denominator 0 -> 1, weight 1/9
    # RT 1x2 ([0.6, 0.2] vs [1, 0]): mx 0.4, my 0.5, sx 0.08, sy 0.5, sxy 0.2 (over N-1 = 1)
    rt = 4 * 0.4 * 0.5 * 0.2 / ((0.4**2 + 0.5**2) * (0.08 + 0.5))  # 0.16 / 0.2378, weight 2/9
    # LB 2x1 ([0.4, 0.0] vs [1, 0]): mx 0.2, sx 0.08, sxy 0.2
    lb = 4 * 0.2 * 0.5 * 0.2 / ((0.2**2 + 0.5**2) * (0.08 + 0.5))  # 0.08 / 0.1682, weight 2/9
    # RB 2x2 (gt all 0): my = 0 -> numerator 0 but denominator > 0 -> 0, weight 4/9
    s_region = (1 * 1 + 2 * rt + 2 * lb + 4 * 0) / 9
    expected = 0.5 * s_object + 0.5 * s_region  # 0.62394...
    assert expected == pytest.approx(0.623941, abs=1e-6)
    assert s_measure(pred, gt).tolist() == pytest.approx([expected], abs=1e-9)
    # gt all 0: S = 1 - mean(pred); gt all 1: S = mean(pred)
    flat = torch.tensor([[0.2, 0.4], [0.0, 0.2]], dtype=torch.float64)
    assert s_measure(flat, torch.zeros(2, 2)).tolist() == pytest.approx([1 - 0.2])
    assert s_measure(flat, torch.ones(2, 2)).tolist() == pytest.approx([0.2])


def test_perfect_prediction_and_all_zero_gt() -> None:
    gt = torch.zeros(1, 1, 4, 4)
    gt[0, 0, 1:3, 0:3] = 1  # 6 of 16 pixels
    perfect = sod_metrics(gt.clone(), gt)
    assert perfect["mae"] == 0.0 and perfect["max_f"] == 1.0 and perfect["max_e"] == 1.0
    assert perfect["s_measure"] == pytest.approx(1.0, abs=1e-12) and perfect["adaptive_f"] == 1.0
    # threshold 0 marks all 16 pixels: P = 6/16, R = 1 -> F0 = 1.3 * 0.375 / 1.1125; every other threshold F = 1
    assert perfect["mean_f"] == pytest.approx((255 + 1.3 * 0.375 / (0.3 * 0.375 + 1)) / 256)
    # ...and phi_FM = 0 at threshold 0 -> E = 0.25 there, 1 elsewhere
    assert perfect["mean_e"] == pytest.approx((255 + 0.25) / 256)
    empty = torch.zeros(1, 1, 4, 4)
    pred = torch.zeros(1, 1, 4, 4)
    pred[0, 0, 0, :2] = 0.5  # 2 of 16 pixels at 0.5
    result = sod_metrics(pred, empty)
    assert result["mae"] == pytest.approx(1 / 16)  # (0.5 + 0.5) / 16
    assert result["s_measure"] == pytest.approx(1 - 1 / 16)  # 1 - mean(pred)
    assert result["max_f"] == 0.0 and result["mean_f"] == 0.0  # no object: recall is 0 by convention
    # enhanced matrix = 1 - FM: threshold 0 -> all marked -> 0; k = 1..127 -> 2 marked -> 14/16; k >= 128 -> 1
    assert result["max_e"] == 1.0
    assert result["mean_e"] == pytest.approx((0 + 127 * 14 / 16 + 128 * 1) / 256)


def test_batches_average_images_and_curves() -> None:
    pred = torch.stack([PRED2, GT2.clone()])[:, None]
    gt = torch.stack([GT2, GT2])[:, None]
    both = sod_metrics(pred, gt)
    first, second = sod_metrics(PRED2, GT2), sod_metrics(GT2.clone(), GT2)
    assert both["n_images"] == 2 and both["mae"] == pytest.approx((first["mae"] + second["mae"]) / 2)
    assert both["s_measure"] == pytest.approx((first["s_measure"] + second["s_measure"]) / 2)
    # max F of the averaged curve: band 4 (0.8125 + 1) / 2 -- not the mean of the per-image maxima
    assert both["max_f"] == pytest.approx((0.8125 + 1) / 2)
    acc = SODMetrics()
    acc.update(pred[:1], gt[:1])
    other = SODMetrics()
    other.update(pred[1:], gt[1:])
    assert acc.merge(other).compute() == pytest.approx(both)
    for shaped in ((pred[:, 0], gt[:, 0]), (pred.float(), gt.bool())):
        assert sod_metrics(*shaped) == pytest.approx(both)


def test_metric_input_errors() -> None:
    with pytest.raises(InputError, match="sigmoid"):
        sod_metrics(torch.full((2, 2), 3.0), GT2)
    with pytest.raises(InputError, match="binary"):
        sod_metrics(PRED2, GT2 * 0.5)
    with pytest.raises(InputError, match="same shape"):
        sod_metrics(PRED2, torch.zeros(3, 3))
    with pytest.raises(InputError, match="no images"):
        SODMetrics().compute()


# ------------------------------------------------------------------------------------------- training, checkpoints

@pytest.fixture(scope="module")
def trained(tiny: SODData):
    return train_sod(tiny, epochs=2, batch_size=4, seed=0, model_options=TINY_UNET, progress=False)


def test_training_smoke_is_deterministic(trained, tiny: SODData) -> None:
    model, summary = trained
    assert summary["steps"] == 4 and math.isfinite(summary["final_loss"]) and summary["n_test"] == 3
    assert set(summary["test_metrics"]) >= {"mae", "max_f", "mean_f", "s_measure", "max_e", "mean_e"}
    assert summary["model_options"] == TINY_UNET and summary["input_size"] == [32, 32]
    again, _ = train_sod(tiny, epochs=2, batch_size=4, seed=0, model_options=TINY_UNET, progress=False)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="epochs"):
        train_sod(tiny, epochs=0, progress=False)
    with pytest.raises(InputError, match="divisible by 64, got 32x32"):
        train_sod(tiny, epochs=1, model_options={"base": 2, "depth": 6}, progress=False)


def test_checkpoint_round_trip(trained, tmp_path: Path) -> None:
    model, summary = trained
    path = save_sod_model(model, tmp_path / "sod.safetensors", {"dataset": TINY, "training": summary})
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["task"] == "sod" and sidecar["arch"] == "unet-sod" and sidecar["input_size"] == [32, 32]
    loaded = load_sod_model(path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training and loaded.normalization() == model.normalization()
    sidecar["model_options"] = {"base": 8, "depth": 2}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="does not match SOD architecture"):
        load_sod_model(path)
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_sod_model(model, tmp_path / "sod.pt")


def test_classifier_checkpoint_is_refused(digits_model) -> None:
    with pytest.raises(CheckpointError, match="classifier checkpoint, not an SOD model") as info:
        load_sod_model(digits_model.checkpoint_file)
    assert digits_model.checkpoint_file in str(info.value) and "train-sod" in str(info.value)


# ---------------------------------------------------------------------------------------------------------- CLI

def test_cli_train_sod(run_cli, tmp_path: Path) -> None:
    ckpt = tmp_path / "sod.safetensors"
    args = ["train-sod", "--dataset", "synthetic-sod:n=8,size=16", "--epochs", "1", "--batch-size", "4",
            "--base", "4", "--depth", "2", "--out", str(ckpt)]
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["checkpoint"] == str(ckpt) and summary["n_train"] == 6 and "max_f" in summary["test_metrics"]
    assert load_sod_model(ckpt).options == TINY_UNET
    code, out, err = run_cli(*args[:-1], str(tmp_path / "again.safetensors"))
    assert code == 0 and "max_f" in out and "constant prior" in out and "saved" in err
    code, _, err = run_cli(*args[:-1], str(tmp_path / "sod.pt"))
    assert code == 2 and ".safetensors" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("train-sod", "--dataset", f"eorssd:{tmp_path / 'none'}", "--out", str(ckpt))
    assert code == 2 and "none" in err


# ---------------------------------------------------------------------------------------------------- doctests

@pytest.mark.parametrize("name", ["advbench.models.unet", "advbench.models.sod", "advbench.sod.metrics"])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- against PySODMetrics


def _soft_blobs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 saliency maps (noisy discs, each spanning 0..255 so PySODMetrics' min-max scaling is a no-op) and
    their uint8 masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    preds, gts = [], []
    for _ in range(n):
        cy, cx, r = rng.uniform(size / 4, 3 * size / 4, 2).tolist() + [rng.uniform(size / 8, size / 3.5)]
        gt = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8) * 255
        soft = np.clip(gt / 255 * 0.7 + rng.normal(0.15, 0.2, gt.shape), 0, 1)
        pred = np.round(soft * 255).astype(np.uint8)
        pred.flat[0], pred.flat[1] = 0, 255
        preds.append(pred)
        gts.append(gt)
    return np.stack(preds), np.stack(gts)


def test_sod_metrics_agree_with_pysodmetrics_on_the_same_maps() -> None:
    """MAE, S-measure, the F and E curves and their adaptive values, image by image as PySODMetrics computes
    them (its curves run from threshold 255 down to 0; its E-measure divides by N - 1 where ours divides by N)."""
    import py_sod_metrics as psm  # installed by the README's --no-deps step: a missing reference is a failure
    preds, gts = _soft_blobs(8, 48, seed=3)
    refs = {"f": psm.Fmeasure(), "e": psm.Emeasure(), "s": psm.Smeasure(), "mae": psm.MAE()}
    for pred, gt in zip(preds, gts, strict=True):
        for metric in refs.values():
            metric.step(pred=pred, gt=gt)
    p, g = torch.from_numpy(preds / 255.0), torch.from_numpy(gts / 255.0)
    n = preds.shape[1] * preds.shape[2]
    f_ref, e_ref = refs["f"].get_results()["fm"], refs["e"].get_results()["em"]
    assert mae(p, g).mean().item() == pytest.approx(refs["mae"].get_results()["mae"], rel=1e-12)
    compared = 0
    for k, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        ys, xs = np.nonzero(gt > 128)
        if ys.mean() % 1 == 0.5 or xs.mean() % 1 == 0.5:
            continue  # a centroid on a half pixel: MATLAB rounds it up, PySODMetrics to even (see the module doc)
        one = psm.Smeasure()
        one.step(pred=pred, gt=gt)
        assert s_measure(p[k], g[k]).item() == pytest.approx(one.get_results()["sm"], rel=1e-12)
        compared += 1
    assert compared >= 6
    np.testing.assert_allclose(f_measure_curve(p, g).mean(0).numpy(), f_ref["curve"][::-1], rtol=1e-10, atol=1e-12)
    assert adaptive_f_measure(p, g).mean().item() == pytest.approx(f_ref["adp"], rel=1e-10)
    np.testing.assert_allclose(e_measure_curve(p, g).mean(0).numpy() * n / (n - 1), e_ref["curve"][::-1],
                               rtol=1e-10, atol=1e-12)
    assert adaptive_e_measure(p, g).mean().item() * n / (n - 1) == pytest.approx(e_ref["adp"], rel=1e-10)
