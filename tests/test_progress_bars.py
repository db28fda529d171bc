"""Progress bars of the long phases (issue 18, item 10): each command shows a bar on stderr that counts samples,
images or steps towards a known total (so tqdm shows an ETA), stdout keeps only the JSON object with --json, and
the library functions stay silent at their default ``progress=False``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SOD = "synthetic-sod:n=12,size=32"
MULTITASK = "synthetic-multitask:n=12,size=16"

#: Tiny tensors run fastest on one thread (see ``one_thread`` in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def bars(err: str, desc: str) -> list[tuple[int, int, str]]:
    """Every drawing of the tqdm bar named ``desc`` in ``err``: (count, total, the bracket with times and rate)."""
    pattern = re.escape(desc) + r": +\d+%\|[^|\r\n]*\| *(\d+)/(\d+) \[([^\]\r\n]*)\]"
    return [(int(n), int(total), info) for n, total, info in re.findall(pattern, err)]


def finished_bar(err: str, desc: str, unit: str, total: int | None = None) -> int:
    """Check that the bar ``desc`` was drawn, ended full, counts more than one ``unit`` and shows an ETA."""
    drawn = bars(err, desc)
    assert drawn, f"no '{desc}' bar on stderr:\n{err[-2000:]}"
    n, last_total, info = drawn[-1]
    assert n == last_total > 1, drawn
    assert total is None or last_total == total, drawn
    assert "<" in info and unit in info, info  # elapsed<remaining and the unit of the rate
    return last_total


def single_json(out: str) -> dict:
    """stdout holds exactly one JSON object and nothing else (no bar went there)."""
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    return payload


@pytest.fixture(scope="module")
def sod_victim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from advbench.datasets.sod import load_sod_dataset
    from advbench.training.sod import save_sod_model, train_sod

    data = load_sod_dataset(SOD)
    model, _ = train_sod(data, epochs=1, batch_size=8, model_options={"base": 4, "depth": 2}, progress=False)
    return save_sod_model(model, tmp_path_factory.mktemp("bars_sod") / "sod.safetensors")


def test_defend_train_counts_attack_steps_and_updates(run_cli, sod_victim: Path, tmp_path: Path) -> None:
    from advbench.datasets.sod import load_sod_dataset

    batches = -(-load_sod_dataset(SOD).x_train.shape[0] // 4)
    dn = tmp_path / "dn.safetensors"
    code, out, err = run_cli("defend", "train", "--victim", str(sod_victim), "--dataset", SOD, "--out", str(dn),
                             "--epochs", "2", "--batch-size", "4", "--attack-steps", "2", "--base", "4", "--depth",
                             "1", "--json")
    assert code == 0, err
    assert single_json(out)["checkpoint"] == str(dn)
    # per batch of each of the 2 epochs: 2 adv-cloud steps, 2 pgd steps and the optimiser update
    finished_bar(err, "train defensenet", "step", total=2 * batches * (2 + 2 + 1))
    # even a single batch of a single epoch is a bar of several steps
    code, out, err = run_cli("defend", "train", "--victim", str(sod_victim), "--dataset", SOD, "--out", str(dn),
                             "--epochs", "1", "--batch-size", "32", "--attack-steps", "2", "--attack", "adv-cloud",
                             "--base", "4", "--depth", "1", "--json")
    assert code == 0, err
    finished_bar(err, "train defensenet", "step", total=2 + 1)


def test_defensenet_library_default_is_silent(sod_victim: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from advbench.datasets.sod import load_sod_dataset
    from advbench.defenses.defensenet import DefenseTrainConfig, train_defensenet
    from advbench.objectives import SOD as SOD_TASK
    from advbench.training.sod import load_sod_model

    data = load_sod_dataset(SOD)
    cfg = DefenseTrainConfig(epochs=1, batch_size=8, attack_steps=1, base=4, depth=1, inputs=("clean", "cloudy"))
    train_defensenet(load_sod_model(sod_victim), data.x_train, data.m_train, SOD_TASK, cfg, progress=False)
    assert capsys.readouterr().err == ""


def test_sod_run_with_defensenet_counts_attack_steps(run_cli, sod_victim: Path, tmp_path: Path) -> None:
    from advbench.datasets.sod import load_sod_dataset
    from advbench.defenses.defensenet import DefenseTrainConfig, save_defensenet, train_defensenet
    from advbench.objectives import SOD as SOD_TASK
    from advbench.training.sod import load_sod_model

    data = load_sod_dataset(SOD)
    cfg = DefenseTrainConfig(epochs=1, batch_size=8, attack_steps=1, base=4, depth=1, inputs=("clean", "cloudy"))
    net, _ = train_defensenet(load_sod_model(sod_victim), data.x_train, data.m_train, SOD_TASK, cfg, progress=False)
    dn = save_defensenet(net, tmp_path / "dn.safetensors")
    args = ["run", "--model", str(sod_victim), "--dataset", SOD, "--attack", "adv-cloud,pgd", "--param",
            "adv-cloud.steps=3", "--param", "pgd.steps=2", "--defense", f"defensenet:{dn}", "--store",
            str(tmp_path / "r.db"), "--json"]
    code, out, err = run_cli(*args)
    assert code == 0, err
    payload = single_json(out)
    assert not payload["skipped"] and "defended adv-cloud" in payload["rows"]
    # the pipeline counts the test images it has attacked (adv-cloud and pgd, on the victim and through the defense)
    finished_bar(err, "attacking", "sample", total=payload["n_images"])
    # a stored run is answered from the store: no attack, no bar
    code, out, err = run_cli(*args)
    assert code == 0 and single_json(out)["skipped"] and not bars(err, "attacking")


def test_sod_robustness_library_default_is_silent(sod_victim: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from advbench.datasets.sod import load_sod_dataset
    from advbench.sod.robustness import CloudAttackConfig, sod_robustness
    from advbench.training.sod import load_sod_model

    data = load_sod_dataset(SOD)
    cfg = CloudAttackConfig(steps=1, pgd_steps=1)
    rows = sod_robustness(load_sod_model(sod_victim), data.x_test[:2], data.m_test[:2], cfg=cfg)["rows"]
    assert "pgd" in rows and capsys.readouterr().err == ""
    sod_robustness(load_sod_model(sod_victim), data.x_test[:2], data.m_test[:2], cfg=cfg, progress=True)
    finished_bar(capsys.readouterr().err, "sod attacks", "step", total=2)


def _image_folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / "images" / f"{i:02d}.png")
        Image.fromarray((rng.random((12, 16)) > 0.5).astype(np.uint8) * 255).save(root / "masks" / f"{i:02d}.png")
    return root


def test_cloudify_counts_images(run_cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from advbench.attacks.clouds import cloudify_folder

    src = _image_folder(tmp_path / "src", 5)
    code, out, err = run_cli("cloudify", str(src), str(tmp_path / "out"), "--json")
    assert code == 0, err
    payload = single_json(out)
    assert payload["images"] == 5 and payload["copied"] == 5
    finished_bar(err, "cloudify", "image", total=5)  # the images only: the masks are copied unchanged
    cloudify_folder(src, tmp_path / "quiet")
    assert capsys.readouterr().err == ""


def test_multitask_run_counts_attack_steps(run_cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from advbench import create_attack
    from advbench.datasets.multitask import load_multitask_dataset
    from advbench.multitask.robustness import multitask_robustness
    from advbench.training.multitask import save_multitask_model, train_multitask

    data = load_multitask_dataset(MULTITASK, seed=0)
    model, _ = train_multitask(data, epochs=1, batch_size=8, model_options={"base": 4, "levels": 2}, progress=False)
    ckpt = save_multitask_model(model, tmp_path / "mt.safetensors")
    n_test = data.x_test.shape[0]
    code, out, err = run_cli("run", "--model", str(ckpt), "--dataset", MULTITASK, "--attack", "stealthy-multitask",
                             "--target-task", "depth", "--steps", "4", "--store", str(tmp_path / "r.db"), "--json")
    assert code == 0, err
    assert single_json(out)["target_task"] == "depth"
    finished_bar(err, "attacking", "sample", total=n_test)  # the pipeline counts the attacked test images
    # the library's default is silent; with progress a batch size of 2 gives one bar step per batch and step
    attack = create_attack("stealthy-multitask", eps=8 / 255, steps=3, target_task="depth")
    targets = {t: v[:4] for t, v in data.targets_test.items()}
    multitask_robustness(model, data.x_test[:4], targets, attack, batch_size=2)
    assert capsys.readouterr().err == ""
    multitask_robustness(model, data.x_test[:4], targets, attack, batch_size=2, progress=True)
    finished_bar(capsys.readouterr().err, "stealthy-multitask attack", "step", total=2 * 3)


@pytest.fixture(scope="module")
def aerial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from advbench.datasets.detection import generate_aerial_dataset

    return generate_aerial_dataset(tmp_path_factory.mktemp("bars_det") / "syn", n_images=8, size=(96, 64), seed=1)


def test_detect_attack_shows_every_phase(run_cli, aerial: Path, tmp_path: Path) -> None:
    from advbench.datasets.detection import load_detection_dataset
    from advbench.detection.protocol import split_by_group

    train, test = split_by_group(load_detection_dataset(f"evd4uav:{aerial}"), 0.5, 0)
    code, out, err = run_cli("detect-attack", "--dataset", f"evd4uav:{aerial}", "--detector", "fcos-mnv3",
                             "--attack", "patch-transfer", "--surrogate", "fcos-mnv3", "--detector-epochs", "1",
                             "--steps", "2", "--patch-size", "4", "--store", str(tmp_path / "r.db"), "--json")
    assert code == 0, err
    payload = single_json(out)
    assert payload["cost"]["steps"] == 2
    for name in ("fcos-mnv3", "surrogate fcos-mnv3"):  # both trained here on the training split: 1 epoch, batches of 4
        finished_bar(err, f"load images ({name})", "image", total=len(train))
        finished_bar(err, f"train {name}", "step", total=-(-len(train) // 4))
    finished_bar(err, "load images", "image", total=len(train))  # the patch's training images, before the batches
    finished_bar(err, "patch-transfer (fcos-mnv3)", "step", total=2)
    finished_bar(err, "attacking", "sample", total=len(test))  # the pipeline's batches of patched test images


def test_step_ticks_docstring_example() -> None:
    import doctest

    import advbench.progress

    result = doctest.testmod(advbench.progress)
    assert result.attempted > 0 and result.failed == 0
