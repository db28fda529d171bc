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
    # 8 columns of 8px + padding 2; 3 rows (clean, adversarial, amplified perturbation)
    assert grid.shape == (3 * 10 + 2, 8 * 10 + 2, 3)
    assert str(grid.dtype) == "uint8"
    clean = torch.full((2, 1, 4, 4), 0.5)
    grid = perturbation_grid(clean, clean + 0.01)
    # a uniform +0.01 perturbation is amplified to full white in the third row
    third_row = grid[2 + 2 * 6 : 2 + 2 * 6 + 4, 2:6]
    assert (third_row == 255).all()
    assert (grid[2:6, 2:6] == 128).all()
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
    assert logged["summary"]["robust_accuracy"] == 0.2
    assert logged["summary"]["per_eps/0.1/robust_accuracy"] == 0.5
    assert logged["summary"]["cost/gradients"] == 10
    assert "curve" not in logged["summary"]
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
