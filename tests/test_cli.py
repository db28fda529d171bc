"""The console script: list, train, run (table and --json), results, and its error handling."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from advbench.cli import main


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["advbench", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from advbench.training import TrainConfig, train_and_save

    path = tmp_path_factory.mktemp("cli") / "mlp.safetensors"
    train_and_save(TrainConfig(arch="mlp", dataset="digits", epochs=5), path, progress=False)
    return path


def test_list_commands(monkeypatch, capsys) -> None:
    code, out, _ = cli(monkeypatch, capsys, "list", "attacks")
    assert code == 0 and "pgd" in out and "square" in out and "black-box" in out
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert rows["pgd"] == "classification" and rows["patch-whitebox"] == "detection"
    assert rows["stealthy-multitask"] == "multi-task dense prediction"
    code, out, _ = cli(monkeypatch, capsys, "list", "models")
    assert code == 0 and "small_cnn" in out and "timm:" in out and "unet-sod" in out and "fcos-mnv3" in out
    code, out, _ = cli(monkeypatch, capsys, "list", "datasets")
    assert code == 0 and "mnist5k" in out
    assert cli(monkeypatch, capsys, "list", "defenses")[0] == 0


def test_train_writes_checkpoint_and_sidecar(monkeypatch, capsys, tmp_path) -> None:
    out_path = tmp_path / "cnn.safetensors"
    code, _, err = cli(monkeypatch, capsys, "train", "--model", "small_cnn", "--dataset", "digits", "--epochs", "2",
                       "--adversarial", "pgd", "--adv-eps", "8/255", "--adv-steps", "2", "--out", str(out_path))
    assert code == 0, err
    meta = json.loads(out_path.with_suffix(".json").read_text())
    assert meta["arch"] == "small_cnn" and meta["training"]["adversarial"] == "pgd"
    assert meta["training"]["adv_eps"] == pytest.approx(8 / 255) and 0.5 < meta["test_accuracy"] <= 1


def test_run_json_curve_store_and_skip(monkeypatch, capsys, tmp_path, ckpt) -> None:
    store = tmp_path / "r.db"
    args = ["run", "--model", str(ckpt), "--dataset", "digits", "--attack", "fgsm,pgd", "--eps", "2/255,0.1,0.2",
            "--n-samples", "60", "--steps", "5", "--store", str(store), "--json"]
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err
    payload = json.loads(out)  # exactly one JSON object on stdout
    for key in ("clean_accuracy", "robust_accuracy", "attack_success_rate", "n", "per_attack", "cost", "config_hash",
                "curve"):
        assert key in payload
    assert payload["n"] == 60 and [p["eps"] for p in payload["curve"]] == [pytest.approx(2 / 255), 0.1, 0.2]
    assert payload["skipped"] is False
    code, out2, err2 = cli(monkeypatch, capsys, *args)
    again = json.loads(out2)
    assert again["skipped"] is True and again["config_hash"] == payload["config_hash"] and "skipped" in err2
    assert again["robust_accuracy"] == payload["robust_accuracy"]
    code, out3, _ = cli(monkeypatch, capsys, *args, "--force")
    forced = json.loads(out3)
    assert forced["skipped"] is False
    with sqlite3.connect(store) as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 1
        assert db.execute("select count(*) from samples").fetchone()[0] == 60 * 3
    code, out, _ = cli(monkeypatch, capsys, "results", "list", "--store", str(store))
    assert code == 0 and payload["config_hash"][:12] in out
    code, out, _ = cli(monkeypatch, capsys, "results", "show", str(forced["run_id"]), "--store", str(store))
    assert code == 0 and "robust" in out
    code, out, _ = cli(monkeypatch, capsys, "results", "export", "--format", "json", "--store", str(store))
    assert json.loads(out)[0]["config_hash"] == payload["config_hash"]
    code, out, _ = cli(monkeypatch, capsys, "results", "export", "--format", "csv", "--store", str(store))
    assert out.splitlines()[0].startswith("id,") and len(out.strip().splitlines()) == 4


def test_run_table_for_two_models_with_one_eps(monkeypatch, capsys, tmp_path, ckpt) -> None:
    code, out, err = cli(monkeypatch, capsys, "run", "--model", f"{ckpt},{ckpt}", "--dataset", "digits",
                         "--attack", "pgd", "--eps", "0.1", "--n-samples", "30", "--steps", "3",
                         "--store", str(tmp_path / "t.db"))
    assert code == 0, err
    assert "robust acc" in out and out.count("mlp") >= 2


@pytest.mark.parametrize(
    "args,match",
    [
        (["--attack", "nope"], "unknown attack 'nope'; known attacks:"),
        (["--dataset", "nope"], "unknown classification data set 'nope'"),
        (["--eps", "-0.1"], "eps must be >= 0"),
        (["--eps", "abc"], "cannot read eps"),
        (["--model", "/no/such/file.safetensors"], "not found"),
        (["--dataset", "mnist5k"], "expects inputs"),
        (["--param", "pgd.steps"], "ATTACK.NAME=VALUE"),
        (["--param", "pgd.steps=0"], "steps must be >= 1"),
    ],
)
def test_run_errors_are_one_line_with_exit_code_2(monkeypatch, capsys, tmp_path, ckpt, args, match) -> None:
    base = {"--model": str(ckpt), "--dataset": "digits", "--attack": "pgd", "--eps": "0.1"}
    extra = []
    for i in range(0, len(args), 2):
        if args[i] in base:
            base[args[i]] = args[i + 1]
        else:
            extra += args[i : i + 2]
    flat = [item for pair in base.items() for item in pair]
    code, out, err = cli(monkeypatch, capsys, "run", *flat, *extra, "--n-samples", "5",
                         "--store", str(tmp_path / "e.db"))
    assert code == 2
    assert match in " ".join(err.split())
    assert "Traceback" not in err


def test_results_on_missing_store(monkeypatch, capsys, tmp_path) -> None:
    code, _, err = cli(monkeypatch, capsys, "results", "list", "--store", str(tmp_path / "none.db"))
    assert code == 2 and "does not exist" in err


def test_ctrl_c_leaves_the_store_consistent(tmp_path, ckpt) -> None:
    """SIGINT in the middle of a slow run: exit 130, the earlier run intact, no partial rows."""
    store = tmp_path / "s.db"
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-m", "advbench", "run", "--model", str(ckpt), "--dataset", "digits", "--store", str(store)]
    subprocess.run([*base, "--attack", "fgsm", "--eps", "0.1", "--n-samples", "20"], check=True, env=env,
                   capture_output=True, timeout=120)
    # SIGINT may be ignored by a parent shell running us in the background; restore the default in the child
    slow = subprocess.Popen([*base, "--attack", "square", "--param", "square.n_queries=100000", "--eps", "0.02",
                             "--n-samples", "300"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = bytearray()

    def pump() -> None:
        while chunk := slow.stderr.read1(4096):
            seen.extend(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.time() + 90
    while time.time() < deadline and b"attacking" not in seen:
        time.sleep(0.2)
    assert b"attacking" in seen, "the run never reached the attack phase"
    time.sleep(1.0)
    assert slow.poll() is None, "the run finished before it could be interrupted; make it slower"
    slow.send_signal(signal.SIGINT)
    slow.wait(timeout=60)
    reader.join(timeout=10)
    err = bytes(seen)
    assert slow.returncode == 130, err.decode()[-500:]
    with sqlite3.connect(store) as db:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert db.execute("select count(*) from runs").fetchone()[0] == 1
        assert db.execute("select count(*) from samples").fetchone()[0] == 20


def test_run_logs_to_wandb_offline(monkeypatch, capsys, tmp_path, ckpt) -> None:
    """--wandb with no API key falls back to offline, says so, and writes an offline run (no network)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc key either
    code, out, err = cli(monkeypatch, capsys, "run", "--model", str(ckpt), "--dataset", "digits", "--attack", "pgd",
                         "--eps", "0.05,0.1", "--n-samples", "16", "--steps", "3", "--store", str(tmp_path / "w.db"),
                         "--wandb", "--json")
    assert code == 0, err
    assert "offline" in err and json.loads(out)["n"] == 16
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_minmax_ensemble_and_universal_from_the_cli(monkeypatch, capsys, tmp_path, ckpt, digits_model) -> None:
    store = str(tmp_path / "mm.db")
    second = digits_model.checkpoint_file
    code, out, err = cli(monkeypatch, capsys, "run", "--attack", "minmax-ensemble", "--model", f"{ckpt},{second}",
                         "--dataset", "digits", "--eps", "0.1,0.2", "--steps", "5", "--gamma", "4", "--alpha", "8",
                         "--beta", "50", "--loss", "cw", "--kappa", "10", "--n-samples", "40", "--store", store,
                         "--json")
    assert code == 0, err
    payload = json.loads(out)
    for key in ("asr_all", "asr_avg", "per_domain", "weights", "curve", "config_hash", "weight_trace"):
        assert key in payload
    assert list(payload["weights"]) == ["mlp", "digits_cnn"]
    assert abs(sum(payload["weights"].values()) - 1) < 1e-5
    assert payload["curve"][0]["asr_all"] <= payload["curve"][1]["asr_all"] + 1e-9
    code, out, err = cli(monkeypatch, capsys, "run", "--attack", "minmax-universal", "--model", str(ckpt),
                         "--dataset", "digits", "--k", "5", "--eps", "0.3", "--steps", "5", "--n-samples", "40",
                         "--store", store, "--json")
    assert code == 0, err
    uni = json.loads(out)
    assert uni["n"] % 5 == 0 and len(uni["weights"]) == 5 and 0 <= uni["asr_all"] <= uni["asr_avg"] <= 1
    code, _, err = cli(monkeypatch, capsys, "run", "--attack", "minmax-ensemble,pgd", "--model", str(ckpt),
                       "--dataset", "digits", "--eps", "0.1", "--store", store)
    assert code == 2 and "not in a cascade" in err
    code, _, err = cli(monkeypatch, capsys, "run", "--attack", "pgd", "--model", str(ckpt), "--dataset", "digits",
                       "--gamma", "3", "--store", store)
    assert code == 2 and "--gamma does not apply" in err
    code, out, _ = cli(monkeypatch, capsys, "results", "list", "--store", store)
    assert code == 0 and out.count("finished") == 2


def test_minmax_run_logs_weight_trace_to_wandb_offline(monkeypatch, capsys, tmp_path, ckpt, digits_model) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the suite disables W&B through the environment
    code, out, err = cli(monkeypatch, capsys, "run", "--attack", "minmax-ensemble", "--model",
                         f"{ckpt},{digits_model.checkpoint_file}", "--dataset", "digits", "--eps", "0.2", "--steps",
                         "3", "--n-samples", "20", "--store", str(tmp_path / "w.db"), "--wandb", "--wandb-mode",
                         "offline", "--json")
    assert code == 0, err
    assert len(json.loads(out)["weight_trace"]) == 4
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
