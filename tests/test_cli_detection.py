"""`advbench train-detector` and `advbench detect-attack`: JSON output, report files, the store, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from advbench.store import ResultsStore


@pytest.fixture(scope="module")
def aerial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from advbench.datasets.detection import generate_aerial_dataset

    return generate_aerial_dataset(tmp_path_factory.mktemp("cli_det") / "syn", n_images=9, size=(128, 96), seed=4)


@pytest.mark.slow
def test_train_then_attack_with_report_and_store(run_cli, aerial, tmp_path) -> None:
    ckpt = tmp_path / "det.safetensors"
    code, out, err = run_cli("train-detector", "--dataset", f"evd4uav:{aerial}", "--arch",
                             "fcos-mnv3", "--epochs", "1", "--out", str(ckpt), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["checkpoint"] == str(ckpt) and ckpt.exists() and summary["n_images"] == 9

    store, report = tmp_path / "r.db", tmp_path / "report"
    args = ["detect-attack", "--dataset", f"evd4uav:{aerial}", "--detector", str(ckpt), "--attack",
            "patch-random-search", "--queries", "12", "--param", "search_images=3", "--patch-size", "6",
            "--score-threshold", "0.05", "--store", str(store)]
    code, out, err = run_cli(*args, "--json", "--report", str(report))
    assert code == 0, err
    payload = json.loads(out)
    assert payload["cost"]["detector_queries"] <= 12 and not payload["skipped"]
    assert set(payload["asr_by_altitude"]) == {"50m", "70m", "90m"}
    assert set(payload["counts"]["by_colour"]) and set(payload["asr_by_type"]) <= {"Car", "Bus", "Truck"}
    saved = json.loads((report / "report.json").read_text())
    assert saved["config_hash"] == payload["config_hash"]
    assert Image.open(report / "patch.png").size == (48, 48)
    assert Image.open(report / "grid.png").size[0] > 0
    with ResultsStore(store) as db:
        runs = db.list_runs()
        assert len(runs) == 1 and db.count_samples(runs[0]["id"]) == payload["counts"]["overall"]["vehicles"]
    # the same command again is answered from the store; the table goes to stdout without --json
    code, out, err = run_cli(*args)
    assert code == 0 and "skipped" in err and "ASR" in out and "90m" in out
    # --wandb (offline here) logs the record, the patched images and nothing goes to the network
    code, out, err = run_cli(*args, "--force", "--wandb", "--wandb-mode", "offline")
    assert code == 0, err
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    # the user's own weights: a bare torchvision state dict, with the architecture and image size given
    import torch

    from advbench.training.detection import load_detector

    bare = tmp_path / "mine.pt"
    torch.save(load_detector(ckpt).model.state_dict(), bare)
    mine = ["detect-attack", "--dataset", f"evd4uav:{aerial}", "--detector", str(bare), "--attack",
            "patch-random-search", "--queries", "6", "--param", "search_images=3", "--store", str(store)]
    code, _, err = run_cli(*mine)
    assert code == 2 and "--detector-arch" in err
    code, out, err = run_cli(*mine, "--detector-arch", "fcos-mnv3", "--image-size", "128x96", "--json")
    assert code == 0, err
    assert json.loads(out)["cost"]["detector_queries"] <= 6


def test_detect_attack_errors_are_one_line(run_cli, aerial, tmp_path) -> None:
    code, _, err = run_cli("detect-attack", "--dataset", f"evd4uav:{aerial}", "--detector",
                           "fcos-mnv3", "--attack", "patch-transfer", "--store", str(tmp_path / "x.db"))
    assert code == 2 and "surrogate" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("detect-attack", "--dataset", f"evd4uav:{aerial}", "--detector",
                           str(tmp_path / "missing.safetensors"), "--attack", "patch-whitebox",
                           "--store", str(tmp_path / "x.db"))
    assert code == 2 and "neither a checkpoint" in err
    code, _, err = run_cli("detect-attack", "--dataset", f"evd4uav:{aerial}", "--detector",
                           "fcos-mnv3", "--attack", "patch-nonsense", "--detector-epochs", "1",
                           "--store", str(tmp_path / "x.db"))
    assert code == 2 and "patch-minmax" in err, err
    code, _, err = run_cli("detect-attack", "--dataset", f"evd4uav:{aerial}", "--detector",
                           "fcos-mnv3", "--attack", "patch-whitebox", "--param", "nonsense",
                           "--store", str(tmp_path / "x.db"))
    assert code == 2 and "NAME=VALUE" in err
    code, _, err = run_cli("detect-attack", "--dataset", f"evd4uav:{aerial}", "--detector", "fcos-mnv3",
                           "--attack", "patch-whitebox", "--patch-altitudes", "70m,120m", "--store",
                           str(tmp_path / "x.db"))
    assert code == 2 and "120m" in err and "'90m'" in err and len(err.strip().splitlines()) == 1


def test_list_the_other_registries(run_cli) -> None:
    for what, expected in (("detectors", {"fcos-mnv3", "fasterrcnn-mnv3"}),
                           ("patch-attacks", {"patch-whitebox", "patch-transfer", "patch-random-search",
                                              "patch-minmax"}),
                           ("multitask-attacks", {"stealthy-multitask", "fixed-weight-multitask", "all-tasks"})):
        code, out, err = run_cli("list", what, "--names")
        assert code == 0, err
        assert set(out.split()) == expected
