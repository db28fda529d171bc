"""Tests of advbench.tracking: W&B mode resolution and the WandbSink in disabled and offline modes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advbench.errors import ConfigError, InputError
from advbench.tracking import WandbSink, has_wandb_api_key, perturbation_grid, resolve_wandb_mode

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No W&B key, no WANDB_MODE, an empty HOME and W&B's own folders under tmp_path."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "NETRC", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    return home


def make_record(n_samples: int = 6) -> dict:
    return {
        "config": {"attack": {"name": "pgd", "steps": 10}, "eps": [0.1, 0.2]},
        "config_hash": "ab" * 32,
        "code_version": "0.1.0+gitunknown",
        "versions": {"torch": torch.__version__},
        "device": "cpu",
        "metrics": {
            "clean_accuracy": 0.9,
            "robust_accuracy": 0.2,
            "attack_success_rate": 0.8,
            "per_eps": {"0.1": {"robust_accuracy": 0.5}},
            "curve": [
                {"eps": 0.1, "robust_accuracy": 0.5, "attack_success_rate": 0.5},
                {"eps": 0.2, "robust_accuracy": 0.2, "attack_success_rate": 0.8},
            ],
        },
        "cost": {"gradients": 10, "queries": 20, "wall_time_s": 0.5},
        "status": "finished",
        "error": None,
        "created_at": "2026-11-26T02:00:00+00:00",
        "samples": [
            {
                "sample_index": i,
                "eps": 0.1,
                "label": i % 3,
                "clean_pred": i % 3,
                "clean_correct": True,
                "robust": i % 2 == 0,
                "adv_pred": None if i % 2 == 0 else 0,
                "broken_by": None if i % 2 == 0 else "pgd",
                "perturbation_norm": 0.1,
            }
            for i in range(n_samples)
        ],
    }


def make_images(n: int = 10) -> dict:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(n, 3, 8, 8, generator=g)
    adversarial = (clean + 0.03 * torch.randn(n, 3, 8, 8, generator=g).sign()).clamp(0, 1)
    return {"clean": clean, "adversarial": adversarial}


# ---------------------------------------------------------------------------------- mode resolution


def test_no_key_falls_back_to_offline(clean_env):
    assert not has_wandb_api_key()
    mode, message = resolve_wandb_mode(None)
    assert mode == "offline"
    assert "no W&B API key" in message and "wandb sync" in message and "./wandb" in message
    mode, message = resolve_wandb_mode("online", dir="/tmp/somewhere")
    assert mode == "offline"
    assert "/tmp/somewhere/wandb" in message


def test_key_from_env_or_netrc(clean_env, monkeypatch):
    netrc = clean_env / ".netrc"
    netrc.write_text("machine example.com\n  login me\n  password secret\n")
    assert resolve_wandb_mode(None)[0] == "offline"  # a netrc without the W&B host does not count
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert resolve_wandb_mode(None) == ("online", None)
    assert resolve_wandb_mode("online") == ("online", None)
    netrc.unlink()
    assert resolve_wandb_mode(None)[0] == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode(None) == ("online", None)


def test_explicit_and_env_modes(clean_env, monkeypatch):
    assert resolve_wandb_mode("disabled") == ("disabled", None)
    assert resolve_wandb_mode("offline") == ("offline", None)
    assert resolve_wandb_mode(" Offline ") == ("offline", None)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode(None) == ("disabled", None)
    assert resolve_wandb_mode("offline") == ("offline", None)  # an explicit request wins over the env
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode(None) == ("offline", None)
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_wandb_mode(None)[0] == "offline"  # online without a key still falls back


def test_bad_mode(clean_env, monkeypatch):
    with pytest.raises(ConfigError, match="online, offline, disabled"):
        resolve_wandb_mode("cloud")
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="WANDB_MODE"):
        resolve_wandb_mode(None)


def test_import_does_not_import_wandb():
    code = "import sys, advbench.tracking; assert 'wandb' not in sys.modules, 'wandb imported eagerly'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------- images


def test_perturbation_grid():
    images = make_images(10)
    grid = perturbation_grid(images["clean"], images["adversarial"])
    # 8 columns, 3 rows (clean, adversarial, amplified perturbation); 8x8 images upscaled 8x to 64x64 tiles,
    # 4 px padding: readable, not a 82x32 thumbnail
    assert grid.shape == (3 * 64 + 4 * 4, 8 * 64 + 9 * 4, 3)
    assert str(grid.dtype) == "uint8"
    # nearest-neighbour upscaling: each source pixel is an 8x8 block of one colour
    tile = grid[4:68, 4:68]
    assert (tile[:8, :8] == tile[0, 0]).all() and (tile[8:16, :8] == tile[8, 0]).all()
    clean = torch.full((2, 1, 4, 4), 0.5)
    grid = perturbation_grid(clean, clean + 0.01)
    assert grid.shape[1] >= 256  # even two 4x4 images make a grid at least 256 px wide
    size = (grid.shape[1] - 3 * 4) // 2

    def tile_at(row: int, col: int):
        y, x = 4 + row * (size + 4), 4 + col * (size + 4)
        return grid[y:y + size, x:x + size]

    # a uniform +0.01 perturbation is amplified to full white in the third row
    assert (tile_at(2, 0) == 255).all() and (tile_at(2, 1) == 255).all()
    assert (tile_at(0, 0) == 128).all()
    with pytest.raises(InputError, match="same shape"):
        perturbation_grid(clean, clean[:1])


# ---------------------------------------------------------------------------------- sink


def test_disabled_sink_logs_everything(clean_env, tmp_path):
    start = time.monotonic()
    with WandbSink(mode="disabled", name="t", tags=("x",), dir=tmp_path / "wb", config={"seed": 0}) as sink:
        assert sink.mode == "disabled" and sink.message is None
        assert sink.run_dir is None
        logged = sink.log_record(make_record(), images=make_images())
        sink.log_metrics({"loss": 1.0}, step=0)
    sink.finish()  # idempotent
    assert logged["media"] == ["curve", "examples", "robust_accuracy_vs_eps", "samples"]
    assert logged["summary"]["robust_accuracy/eps=0.2"] == 0.2
    assert logged["summary"]["robust_accuracy/eps=0.1"] == 0.5
    assert "robust_accuracy" not in logged["summary"]  # never a number without its eps
    assert logged["summary"]["clean_accuracy"] == 0.9
    assert logged["summary"]["per_eps/0.1/robust_accuracy"] == 0.5
    assert logged["summary"]["cost/gradients"] == 10
    assert "curve" not in logged["summary"]
    assert [step["eps"] for step in logged["history"]] == [0.1, 0.2]
    with pytest.raises(InputError, match="adversarial"):
        WandbSink(mode="disabled").log_record(make_record(), images={"clean": torch.zeros(1, 3, 2, 2)})
    assert time.monotonic() - start < 20


def test_offline_sink_writes_run_dir(clean_env, tmp_path):
    start = time.monotonic()
    out = tmp_path / "wb"
    try:
        sink = WandbSink(mode=None, name="offline-test", group="tests", dir=out)
    except Exception as exc:  # pragma: no cover - reported, never silently skipped
        pytest.fail(f"wandb offline mode could not start (service binary?): {type(exc).__name__}: {exc}")
    with sink:
        assert sink.mode == "offline"
        assert "no W&B API key" in sink.message
        logged = sink.log_record(make_record(), images=make_images(3))
        sink.log_metrics({"loss": 0.5}, step=1)
        run_dir = sink.run_dir
        run_id = sink.run_id
    assert "examples" in logged["media"]
    run_dirs = list((out / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    assert run_dir == run_dirs[0].absolute()
    assert run_id and run_dirs[0].name.endswith(run_id)
    wandb_files = list(run_dirs[0].glob("*.wandb"))
    assert len(wandb_files) == 1 and wandb_files[0].stat().st_size > 0
    assert time.monotonic() - start < 30


# ---------------------------------------------------------------------------------- what W&B received (issue 18)


def read_wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's ``.wandb`` file.

    The file is W&B's append-only log: a 7-byte header (``:W&B``, magic, version), then 32 KiB
    blocks of chunks, each with a 7-byte header (checksum, little-endian length, type: 1 full,
    2 first, 3 middle, 4 last); a block tail shorter than a chunk header is padding."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, pos, pending, out = 32 * 1024, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            payload = chunk
        elif kind in (2, 3):
            pending += chunk
            continue
        elif kind == 4:
            payload, pending = pending + chunk, b""
        else:  # zero padding
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        out.append(record)
    return out


def logged_run(run_dir: Path, timeout: float = 60.0) -> dict:
    """History rows, the final summary and the metric definitions of an offline run, decoded.

    W&B's service process writes the log file on its own schedule: ``finish()`` can return before
    the records reach the disk, so this waits (up to ``timeout`` seconds) for the run's exit record."""
    import json

    (log_file,) = run_dir.glob("*.wandb")
    deadline = time.monotonic() + timeout
    records = read_wandb_records(log_file)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, f"{log_file} has no exit record after {timeout} s"
        time.sleep(0.2)
        records = read_wandb_records(log_file)
    history, summary, metrics = [], {}, []
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            for item in record.summary.remove:
                summary.pop(item.key or "/".join(item.nested_key), None)
        elif kind == "metric":
            metrics.append(record.metric)
    return {"history": history, "summary": summary, "metrics": metrics}


def cascade_record() -> dict:
    """A record shaped like advbench.runner.build_record's for two eps, with a defense."""
    def per_attack(k: int) -> dict:
        return {"pgd": {"broken": 3 * k, "attacked": 50, "gradients": 400, "kind": "white-box"},
                "square": {"broken": k, "attacked": 40, "queries": 900, "kind": "black-box"}}

    curve = [{"eps": 0.05, "robust_accuracy": 0.84, "attack_success_rate": 0.087, "mean_perturbation": 0.05,
              "per_attack": per_attack(1)},
             {"eps": 0.1, "robust_accuracy": 0.64, "attack_success_rate": 0.304, "mean_perturbation": 0.086,
              "per_attack": per_attack(2)}]
    return {
        "config": {"model": {"name": "cnn", "sha256": "ab" * 32}, "dataset": "digits", "norm": "linf",
                   "eps": [0.05, 0.1], "attacks": [{"name": "pgd", "steps": 10}, {"name": "square", "n_queries": 50}],
                   "defense": {"name": "jpeg", "params": {"quality": 60}, "differentiable": False, "bpda": True}},
        "config_hash": "cd" * 32,
        "metrics": {"n": 50, "norm": "linf", "clean_accuracy": 0.92, "robust_accuracy": 0.64,
                    "attack_success_rate": 0.304, "per_attack": per_attack(2), "mean_perturbation": 0.086,
                    "max_perturbation": 0.1, "per_class_robust_accuracy": {"0": 1.0, "1": 0.8}, "warnings": [],
                    "curve": curve},
        "cost": {"gradients": 800, "queries": 1800, "wall_time_s": 2.0},
        "status": "finished",
        "created_at": "2026-11-26T02:00:00+00:00",
        "samples": [],
    }


def test_offline_run_has_per_eps_summary_history_json_tables_and_a_readable_grid(clean_env, tmp_path):
    """Before: summary robust_accuracy without its eps, nothing per eps in history, per_attack as a Python
    repr, and an 82x32 image."""
    import json

    from PIL import Image

    g = torch.Generator().manual_seed(0)
    clean = torch.rand(8, 1, 8, 8, generator=g)  # digits-sized
    images = {"clean": clean, "adversarial": (clean + 0.1 * torch.randn(8, 1, 8, 8, generator=g).sign()).clamp(0, 1)}
    with WandbSink(mode="offline", name="cnn|digits|pgd+square|linf|eps=0.05,0.1|jpeg:quality=60",
                   dir=tmp_path / "wb") as sink:
        sink.log_record(cascade_record(), images=images)
        run_dir = sink.run_dir
    logged = logged_run(run_dir)

    # eps is the step metric of the per-eps series, and neither lands in the summary as a bare number
    defined = {(m.name or m.glob_name): m for m in logged["metrics"]}
    assert {"eps", "by_eps/*"} <= set(defined), logged["metrics"]
    assert defined["by_eps/*"].step_metric == "eps" and defined["by_eps/*"].summary.none
    assert defined["eps"].summary.none
    # one history step per eps
    steps = [row for row in logged["history"] if "eps" in row]
    assert [row["eps"] for row in steps] == [0.05, 0.1]
    assert [row["by_eps/robust_accuracy"] for row in steps] == [0.84, 0.64]
    assert [row["by_eps/per_attack/pgd/broken"] for row in steps] == [3, 6]
    assert [row["by_eps/attack_success_rate"] for row in steps] == [0.087, 0.304]
    # summary keys carry their eps
    summary = logged["summary"]
    assert summary["robust_accuracy/eps=0.05"] == 0.84 and summary["robust_accuracy/eps=0.1"] == 0.64
    assert summary["per_attack/square/broken/eps=0.05"] == 1 and summary["per_attack/square/broken/eps=0.1"] == 2
    assert summary["max_perturbation/eps=0.1"] == 0.1 and "max_perturbation/eps=0.05" not in summary
    assert summary["clean_accuracy"] == 0.92 and summary["cost/queries"] == 1800
    for bare in ("robust_accuracy", "attack_success_rate", "mean_perturbation", "eps", "by_eps/robust_accuracy"):
        assert bare not in summary, bare
    assert not [k for k in summary if k.startswith("per_attack/") and "/eps=" not in k]
    # table cells that hold dicts are JSON, not Python reprs
    (table_file,) = (run_dir / "files" / "media" / "table").glob("curve_*.table.json")
    table = json.loads(table_file.read_text())
    column = table["columns"].index("per_attack")
    cells = [row[column] for row in table["data"]]
    assert [json.loads(c)["pgd"]["broken"] for c in cells] == [3, 6]
    assert all("'" not in c for c in cells)
    # the example grid is big enough to see 8x8 digits
    (png,) = (run_dir / "files" / "media" / "images").glob("examples_*.png")
    with Image.open(png) as image:
        width, height = image.size
    assert width >= 256 and height >= 3 * 64


def test_sweep_summary_draws_one_plot_per_norm_and_one_line_per_run(clean_env, tmp_path):
    """Before: linf and l2 eps were one line per model; a PGD and an APGD-CE+Square run were one name."""
    import copy
    import json

    def record(digest: str, norm: str, attacks: list[str], curve: list[tuple[float, float]]) -> dict:
        rec = copy.deepcopy(cascade_record())
        rec["config"].update(norm=norm, eps=[e for e, _ in curve], attacks=[{"name": a} for a in attacks])
        rec["config"].pop("defense")
        rec["config_hash"] = digest * 64
        rec["metrics"]["curve"] = [{"eps": e, "robust_accuracy": a} for e, a in curve]
        return rec

    records = [record("1", "linf", ["pgd"], [(0.05, 0.8), (0.1, 0.6)]),
               record("2", "l2", ["pgd"], [(0.5, 0.7), (1.0, 0.3)]),
               record("3", "linf", ["apgd-ce", "square"], [(0.1, 0.5)]),
               {**record("4", "linf", ["fgsm"], [(0.1, 0.9)]), "status": "failed"}]
    with WandbSink(mode="offline", name="sweep-summary", dir=tmp_path / "wb") as sink:
        logged = sink.log_sweep_summary(records)
        run_dir = sink.run_dir
    assert logged["rows"] == 5
    assert logged["plots"] == {
        "robust_accuracy_vs_eps/digits/l2": ["cnn|digits|pgd|l2"],
        "robust_accuracy_vs_eps/digits/linf": ["cnn|digits|apgd-ce+square|linf", "cnn|digits|pgd|linf"],
    }
    tables = {}
    for path in (run_dir / "files" / "media" / "table").rglob("*.table.json"):
        tables[path.relative_to(run_dir / "files" / "media" / "table").as_posix()] = json.loads(path.read_text())
    sweep = next(t for name, t in tables.items() if name.startswith("sweep_table"))
    names = {row[sweep["columns"].index("run")] for row in sweep["data"]}
    assert names == {"cnn|digits|pgd|linf|eps=0.05,0.1", "cnn|digits|pgd|l2|eps=0.5,1",
                     "cnn|digits|apgd-ce+square|linf|eps=0.1"}
    # each plot's data holds only its own norm's eps
    plotted = {}
    for name, table in tables.items():
        if name.startswith("robust_accuracy_vs_eps"):
            cols = table["columns"]
            rows = [dict(zip(cols, row, strict=True)) for row in table["data"]]
            norm = name.split("/")[2].split("_table")[0]
            plotted[norm] = {(r["lineKey"], r["step"]) for r in rows}
    assert plotted == {
        "l2": {("cnn|digits|pgd|l2", 0.5), ("cnn|digits|pgd|l2", 1.0)},
        "linf": {("cnn|digits|pgd|linf", 0.05), ("cnn|digits|pgd|linf", 0.1), ("cnn|digits|apgd-ce+square|linf", 0.1)},
    }
