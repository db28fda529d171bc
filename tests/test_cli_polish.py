"""What a user reads from the console script when the input is wrong or odd (issue 18): one-line errors that
name the parameter, no silent acceptance, --version, flags without fake metavars, every data set listed."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from advbench.training import TrainConfig, train_and_save

    path = tmp_path_factory.mktemp("polish") / "mlp.safetensors"
    train_and_save(TrainConfig(arch="mlp", dataset="digits", epochs=2), path, progress=False)
    return path


@pytest.mark.parametrize(("param", "attack", "message"), [
    ("pgd.stepz=3", "pgd", "attack 'pgd' has no parameter 'stepz'; its parameters are: norm, eps, steps"),
    ("pgd.steps=abc", "pgd", "pgd.steps must be an integer, got 'abc'"),
    ("fgsm.steps=3", "fgsm", "attack 'fgsm' has no parameter 'steps'"),
    ("fgsm.steps=3", "pgd", "names attack 'fgsm', which is not in --attack"),
    ("pgd.norm=l7", "pgd", "--param pgd.norm is not allowed: set the budget with --norm"),
    ("square.p_init=high", "square", "square.p_init must be a number (or a fraction like 8/255)"),
])
def test_a_bad_param_is_one_line_naming_it(run_cli, tmp_path, ckpt, param, attack, message) -> None:
    code, out, err = run_cli("run", "--model", str(ckpt), "--dataset", "digits", "--attack", attack,
                         "--param", param, "--store", str(tmp_path / "r.db"))
    assert code == 2 and message in err and "Traceback" not in err and not out
    assert not (tmp_path / "r.db").exists()


def test_silent_acceptance_is_gone(run_cli, tmp_path, ckpt) -> None:
    store = str(tmp_path / "r.db")
    code, _, err = run_cli("run", "--model", str(ckpt), "--dataset", "digits", "--eps", "5",
                       "--store", store)
    assert code == 2 and "did you mean 5/255" in err
    code, _, err = run_cli("run", "--model", str(ckpt), "--dataset", "digits", "--attack", "fgsm,pgd",
                       "--steps", "2", "--eps", "0.1", "--n-samples", "20", "--store", store)
    assert code == 0 and "--steps 2 applies to pgd; fgsm has no 'steps'" in err
    code, _, err = run_cli("run", "--model", "mlp", "--dataset", "digits", "--store", store)
    assert code == 2 and "mlp?random=true" in err and "untrained" in err


def test_version_flags_and_listings(run_cli) -> None:
    from advbench import __version__

    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith(f"advbench {__version__}")
    code, out, _ = run_cli("run", "--help")
    assert code == 0 and "--force" in out
    force_line = next(line for line in out.splitlines() if "--force" in line)
    assert "<bool>" not in force_line
    code, out, _ = run_cli("list", "datasets")
    for name in ("digits", "cifar100", "synthetic-sod", "synthetic-multitask", "evd4uav", "eorssd", "nyuv2", "coco"):
        assert name in out


def test_a_raw_pickle_is_refused_without_torchs_warning(tmp_path) -> None:
    """The refusal is the only message (torch used to print its own protocol warning first)."""
    path = tmp_path / "raw.pt"
    with open(path, "wb") as fh:
        pickle.dump({"w": print}, fh)  # needs code (a global) to load
    done = subprocess.run([sys.executable, "-m", "advbench", "run", "--model", f"mlp?weights={path}", "--dataset",
                           "digits", "--store", str(tmp_path / "r.db")], capture_output=True, text=True, timeout=120,
                          env={"WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "refused" in done.stderr and "UserWarning" not in done.stderr and "weights_only" not in done.stderr


def test_hints_are_shell_quoted(run_cli, tmp_path) -> None:
    folder = tmp_path / "my models"
    folder.mkdir()
    bare = folder / "net.pth"
    import torch

    torch.save({"w": torch.zeros(1)}, bare)
    code, _, err = run_cli("run", "--model", str(bare), "--dataset", "digits")
    assert code == 2 and f"'timm:NAME?weights={bare}'" in err


def test_hyperparameters_given_as_text_or_numpy_are_converted() -> None:
    import numpy as np

    import advbench
    from advbench.errors import ConfigError

    assert advbench.create_attack("pgd", step_size="1/255").step_size == pytest.approx(1 / 255)
    assert advbench.create_attack("square", p_init="1/2").p_init == 0.5
    assert advbench.create_attack("pgd", steps=np.int64(3), early_stop=np.bool_(False)).early_stop is False
    with pytest.raises(ConfigError, match="pgd.steps must be an integer, got True"):
        advbench.create_attack("pgd", steps=True)
    with pytest.raises(ConfigError, match="pgd.step_size must be a number"):
        advbench.create_attack("pgd", step_size="abc")


def test_a_failed_cell_never_replaces_a_finished_record(tmp_path) -> None:
    from advbench.store import ResultsStore
    from advbench.sweep import SweepSummary, _Reporter

    class Sink:
        def log_cell(self, record):
            pass

    class Bar:
        def update(self, n):
            pass

    finished = {"config": {"model": {"name": "m"}}, "config_hash": "h" * 64, "name": "m", "status": "finished",
                "error": None, "metrics": {"robust_accuracy": 0.5}, "cost": {}, "samples": [], "created_at": "now"}
    with ResultsStore(tmp_path / "r.db") as store:
        kept = store.save_run(finished).id
        _Reporter(store, SweepSummary(total=1), Sink(), Bar()).failed(finished["config"], "h" * 64, "out of memory")
        runs = store.list_runs()
    assert [(r["id"], r["status"]) for r in runs] == [(kept, "finished")]


def test_leaderboard_identity_separates_weight_files_and_int8_and_skips_random() -> None:
    from advbench.leaderboards.collect import model_key, skip_reason

    a = {"name": "resnet20@best", "weights": {"path": "runs/a/best.pt", "sha256": "1" * 64}, "arch": "resnet20"}
    b = {**a, "weights": {"path": "runs/b/best.pt", "sha256": "2" * 64}}
    int8 = {**a, "quantization": {"mode": "dynamic"}}
    assert len({model_key(a), model_key(b), model_key(int8)}) == 3
    record = {"status": "finished", "config": {"model": {"name": "small_cnn", "weights": "random"},
                                               "dataset": "digits", "norm": "linf"},
              "metrics": {"clean_accuracy": 0.1, "robust_accuracy": 0.0}}
    assert "random weights" in skip_reason(record)
