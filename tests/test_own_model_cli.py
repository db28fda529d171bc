"""End to end, as a new researcher: their own model files and their own data on disk, through ``advbench run``.

* a generated ImageNet-val-style folder (1,000 JPEGs at 224x224 in 10 synset folders) evaluated with a timm and
  a torchvision model that have 1,000 outputs (the prediction is taken among the folder's 10 classes);
* a generated CIFAR-10 python layout that holds only ``test_batch`` and ``batches.meta``, with a RobustBench
  WideResNet-28-10 found by its zoo name in a local ``model_dir``;
* an int8 model (black-box attacks run, gradient attacks need a declared surrogate);
* records that change when what changes the numbers changes (normalization, data content).
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advbench.store import ResultsStore

N_CLASSES, PER_CLASS = 10, 100




def run_json(run_cli, *args: str) -> dict:
    code, out, err = run_cli("run", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def labels_of(store: Path, run_id: int) -> Counter:
    with ResultsStore(store) as db:
        return Counter(row["label"] for row in db.samples(run_id) if row["eps"] == db.samples(run_id)[0]["eps"])


@pytest.fixture(scope="module")
def imagenet_val(tmp_path_factory) -> tuple[Path, tuple[str, ...]]:
    """1,000 JPEGs, 224x224, in 10 ImageNet synset folders (the class-folder layout of ImageNet val)."""
    from advbench.models.resolve import imagenet_synsets

    root = tmp_path_factory.mktemp("imagenet") / "val"
    synsets = imagenet_synsets()[:: 100][:N_CLASSES]
    rng = np.random.default_rng(0)
    for c, synset in enumerate(synsets):
        folder = root / synset
        folder.mkdir(parents=True)
        base = rng.integers(0, 256, size=3)
        for i in range(PER_CLASS):
            noise = rng.integers(-40, 40, size=(224, 224, 3))
            pixels = np.clip(base + noise + c * 7, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{c * PER_CLASS + i:08d}.JPEG", quality=85)
    return root, synsets


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory) -> Path:
    import timm

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False)  # 1,000 ImageNet outputs
    path = tmp_path_factory.mktemp("timm") / "checkpoint.pth.tar"
    torch.save({"epoch": 1, "state_dict": net.state_dict(), "arch": "test_resnet"}, path)
    return path


def test_imagefolder_with_a_timm_model(run_cli, tmp_path, imagenet_val, timm_checkpoint) -> None:
    import timm

    root, synsets = imagenet_val
    store = tmp_path / "r.db"
    model = f"timm:test_resnet?weights={timm_checkpoint}"
    args = ("--model", model, "--dataset", f"imagefolder:{root}", "--attack", "fgsm", "--eps", "2/255",
            "--n-samples", "100", "--store", str(store))
    out = run_json(run_cli, *args)
    cfg = timm.models.get_pretrained_cfg("test_resnet").to_dict()
    crop = cfg["input_size"][1]
    assert out["n"] == 100
    assert out["selection"]["method"] == "balanced" and out["selection"]["n_available"] == N_CLASSES * PER_CLASS
    assert out["preprocessing"] == {"resize": int(crop // cfg["crop_pct"]), "crop": crop,
                                    "interpolation": cfg["interpolation"]}
    model_entry = out["config"]["model"]
    assert model_entry["arch"] == "timm:test_resnet" and model_entry["num_classes"] == 1000
    assert model_entry["normalization"] == {"mean": list(cfg["mean"]), "std": list(cfg["std"])}
    from advbench.checkpoints import file_sha256

    assert model_entry["weights"]["sha256"] == file_sha256(timm_checkpoint)
    assert out["config"]["data"]["class_map"]["indices"] == [1000 // N_CLASSES * c for c in range(N_CLASSES)]
    assert labels_of(store, out["run_id"]) == Counter({c: 10 for c in range(N_CLASSES)}), "class-balanced"
    assert {"attacks", "seed", "versions", "code_version", "device", "dtype"} <= set(out)
    again = run_json(run_cli, *args)
    assert again["skipped"] and again["config_hash"] == out["config_hash"]
    other_seed = run_json(run_cli, *args, "--seed", "1")
    assert other_seed["config_hash"] != out["config_hash"] and not other_seed["skipped"]
    assert other_seed["selection"]["ids_sha256"] != out["selection"]["ids_sha256"]


@pytest.mark.slow
def test_imagefolder_with_a_torchvision_model_whole_and_capped(run_cli, tmp_path, imagenet_val) -> None:
    import torchvision

    root, _ = imagenet_val
    torch.manual_seed(0)
    path = tmp_path / "mnv3.pth"
    torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(), path)
    out = run_json(run_cli, "--model", f"torchvision:mobilenet_v3_small?weights={path}", "--dataset",
                   f"imagefolder:{root}", "--attack", "fgsm", "--eps", "1/255", "--n-samples", "1000",
                   "--batch-size", "250", "--store", str(tmp_path / "r.db"))
    assert out["n"] == N_CLASSES * PER_CLASS, "an image folder is evaluated as it stands, never split"
    assert out["preprocessing"] == {"resize": 256, "crop": 224, "interpolation": "bilinear"}
    assert labels_of(tmp_path / "r.db", out["run_id"]) == Counter({c: PER_CLASS for c in range(N_CLASSES)})
    capped = run_json(run_cli, "--model", f"torchvision:mobilenet_v3_small?weights={path}", "--dataset",
                      f"imagefolder:{root}", "--attack", "fgsm", "--eps", "1/255", "--n-samples", "5000",
                      "--selection", "first", "--store", str(tmp_path / "r.db"))
    assert capped["n"] == 1000
    assert any("5000" in w["message"] and "1000" in w["message"] for w in capped["warnings"])


def _write_cifar_test_only(folder: Path, n: int = 500) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    labels = [i % 10 for i in range(n)]
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data,
                     b"filenames": [f"img{i}.png".encode() for i in range(n)]}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                                      b"horse", b"ship", b"truck"], b"num_vis": 3072, b"num_cases_per_batch": n},
                    fh)


def test_cifar10_test_batch_only_with_a_robustbench_wideresnet(run_cli, tmp_path) -> None:
    from advbench.models.resolve import import_robustbench

    zoo, dataset_enum, threat_enum = import_robustbench()
    torch.manual_seed(0)
    net = zoo.model_dicts[dataset_enum("cifar10")][threat_enum("Linf")]["Standard"]["model"]()  # WRN-28-10
    model_dir = tmp_path / "models"
    (model_dir / "cifar10" / "Linf").mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               model_dir / "cifar10" / "Linf" / "Standard.pt")
    _write_cifar_test_only(tmp_path / "cifar-10-batches-py")
    out = run_json(run_cli, "--model", f"robustbench:Standard?model_dir={model_dir}", "--dataset",
                   f"cifar10:{tmp_path}", "--attack", "fgsm", "--eps", "8/255", "--n-samples", "20",
                   "--store", str(tmp_path / "r.db"))
    assert out["n"] == 20 and out["selection"]["n_available"] == 500
    assert out["config"]["model"]["arch"] == "robustbench:cifar10/Linf/Standard"
    assert out["preprocessing"] is None and out["config"]["model"]["normalization"]["std"] == [1.0] * 3
    assert labels_of(tmp_path / "r.db", out["run_id"]) == Counter({c: 2 for c in range(10)})


def test_int8_runs_black_box_and_needs_a_declared_gradient_source(run_cli, tmp_path) -> None:
    from torch import nn

    from advbench.models import create_model

    torch.manual_seed(0)
    net = create_model("mlp", input_shape=(1, 8, 8), num_classes=10).net.eval()
    int8 = torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)
    path = tmp_path / "mlp-int8.pt"
    torch.save(int8.state_dict(), path)
    store = str(tmp_path / "r.db")
    base = ("--dataset", "digits", "--eps", "0.1", "--n-samples", "20", "--store", store)
    square = run_json(run_cli, "--model", f"mlp?weights={path}&quantized=dynamic", "--attack", "square",
                      "--param", "square.n_queries=50", *base)
    assert square["config"]["model"]["quantization"]["mode"] == "dynamic"
    assert square["config"]["model"]["gradients"].startswith("none")
    code, _, err = run_cli("run", "--model", f"mlp?weights={path}&quantized=dynamic", "--attack",
                       "pgd", *base)
    assert code == 2 and "surrogate=PATH" in err and "square" in err
    bpda = run_json(run_cli, "--model", f"mlp?weights={path}&quantized=dynamic&gradients=bpda",
                    "--attack", "pgd", "--steps", "3", *base)
    assert bpda["config"]["model"]["gradients"].startswith("bpda")
    assert not any(w["name"] == "ZeroGradientWarning" for w in bpda["warnings"])


def test_the_hash_covers_normalization_and_data_content(run_cli, tmp_path) -> None:
    """A bare state dict with a sidecar: changing the sidecar's mean/std changes the logits, so it must change
    the config hash (it used to answer from the store); so must other pixels behind the same data set path."""
    from advbench.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", input_shape=(3, 16, 16), num_classes=3)
    path = tmp_path / "cnn.pt"
    torch.save(model.net.state_dict(), path)
    sidecar = {"arch": "small_cnn", "input_shape": [3, 16, 16], "num_classes": 3,
               "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    data = tmp_path / "data"
    for c in range(3):
        (data / f"class{c}").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (60 * c + i, 90, 30 * i)).save(data / f"class{c}" / f"{i}.png")
    args = ("--model", str(path), "--dataset", f"imagefolder:{data}", "--attack", "fgsm", "--eps", "0.05",
            "--store", str(tmp_path / "r.db"))
    first = run_json(run_cli, *args)
    sidecar["normalization"]["mean"] = [0.4, 0.4, 0.4]
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    renormed = run_json(run_cli, *args)
    assert not renormed["skipped"] and renormed["config_hash"] != first["config_hash"]
    Image.new("RGB", (16, 16), (255, 0, 0)).save(data / "class0" / "0.png")
    changed = run_json(run_cli, *args)
    assert not changed["skipped"] and changed["config_hash"] != renormed["config_hash"]
    assert changed["config"]["data"]["fingerprint"] != renormed["config"]["data"]["fingerprint"]


def test_a_users_own_module_and_an_fp16_checkpoint(run_cli, tmp_path) -> None:
    """``py:FILE.py:FACTORY`` with its weights and flags instead of a sidecar; fp16 weights are cast with a
    recorded warning, or kept with --dtype."""
    (tmp_path / "digitnet.py").write_text(
        "import torch.nn as nn\n"
        "def build(hidden=32):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))\n")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    torch.save(net.half().state_dict(), tmp_path / "w16.pt")
    base = ("--dataset", "digits", "--attack", "pgd", "--steps", "2", "--eps", "0.1", "--n-samples", "30",
            "--store", str(tmp_path / "r.db"))
    spec = f"py:{tmp_path / 'digitnet.py'}:build?weights={tmp_path / 'w.pt'}&hidden=32"
    out = run_json(run_cli, "--model", spec, "--mean", "0.3", "--std", "0.4", *base)
    assert out["config"]["model"]["normalization"] == {"mean": [0.3], "std": [0.4]}
    assert out["config"]["model"]["arch"] == "py:digitnet.py:build" and out["n"] == 30
    half = run_json(run_cli, "--model", spec.replace("w.pt", "w16.pt"), *base)
    assert half["config"]["model"]["weights_dtype"] == "float16" and half["dtype"] == "float32"
    assert any("float16" in w["message"] for w in half["warnings"])
    kept = run_json(run_cli, "--model", spec.replace("w.pt", "w16.pt"), "--dtype", "auto", *base)
    assert kept["dtype"] == "float16" and kept["config_hash"] != half["config_hash"]
