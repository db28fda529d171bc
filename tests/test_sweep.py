"""Sweeps: spec validation with field and line, resume after SIGKILL, failed cells, a Dask worker killed
mid-sweep, W&B runs per cell, and store integrity after all of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advbench.errors import ConfigError
from advbench.sweep import run_sweep
from advbench.sweep_spec import load_sweep_spec

SPEC = """\
name: test-sweep
store: results.db
models: [{models}]
datasets: [digits]
attacks:
  - pgd
  - {{cascade: [fgsm, pgd], params: {{pgd: {{steps: 3}}}}}}
norms: [linf, l2]
eps: {{linf: [0.05, 0.1], l2: [0.5]}}
defaults: {{n_samples: {n}}}
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, digits_model):
    folder = tmp_path_factory.mktemp("sweep-models")
    src = Path(digits_model.checkpoint_file)
    for name in ("a", "b"):
        shutil.copy(src, folder / f"{name}.safetensors")
        shutil.copy(src.with_suffix(".json"), folder / f"{name}.json")
    return folder


def write_spec(folder: Path, models: list[str], n: int = 40) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(SPEC.format(models=", ".join(models), n=n))
    return path


def runs(store: Path) -> list[tuple]:
    with sqlite3.connect(store) as db:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
        return db.execute("select config_hash, status from runs").fetchall()


@pytest.mark.parametrize(
    "text,match",
    [
        ("name: x\nmodels: [a\n  - b\n", r"sweep.yaml: malformed YAML at line 4, column 1: expected .,. or .\]."),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks: [pgd]\neps: [0.1]\nlayers: [1]\n",
         r"sweep.yaml:6: layers: unknown field 'layers'"),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks: [pgd]\neps: [0.1, -3]\n", r"sweep.yaml:5: eps: .*>= 0"),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks: [pgd]\nnorms: [linf, l7]\neps: [0.1]\n",
         r"sweep.yaml:5: norms.1: Input should be"),
        ("name: x\nmodels: [a, b]\ndatasets: [digits]\nattacks: [pgd, fgsm, pgd-cw]\neps: [0.1]\ncombine: zip\n",
         r"equal length"),
    ],
)
def test_bad_specs_name_the_field_and_line(tmp_path, text, match) -> None:
    (tmp_path / "sweep.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_sweep_spec(tmp_path / "sweep.yaml")


def test_local_sweep_resumes_and_records_failures(tmp_path, checkpoints) -> None:
    models = [str(checkpoints / "a.safetensors"), str(checkpoints / "b.safetensors"), str(tmp_path / "missing.pt")]
    spec = load_sweep_spec(write_spec(tmp_path, models))
    assert len(spec.cells()) == 12
    summary = run_sweep(spec, progress=False)
    assert (summary.finished, summary.failed, summary.skipped) == (8, 4, 0)
    rows = runs(tmp_path / "results.db")
    assert len(rows) == 12 and sorted(s for _, s in rows).count("failed") == 4
    again = run_sweep(load_sweep_spec(tmp_path / "sweep.yaml"), progress=False)
    assert (again.finished, again.skipped) == (0, 8), "stored cells are skipped; failed ones are retried"
    assert len(runs(tmp_path / "results.db")) == 12
    from advbench.store import ResultsStore

    with ResultsStore(tmp_path / "results.db") as db:
        failed = [r for r in db.list_runs() if r["status"] == "failed"]
        assert "not found" in db.get_run(failed[0]["id"])["error"]


def test_sigkill_mid_sweep_then_resume_gives_exactly_n_records(tmp_path, checkpoints) -> None:
    spec_path = write_spec(tmp_path, [str(checkpoints / "a.safetensors"), str(checkpoints / "b.safetensors")], n=120)
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "advbench", "sweep", str(spec_path)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = tmp_path / "results.db"
    deadline = time.time() + 120
    while time.time() < deadline:
        if store.exists():
            with sqlite3.connect(store) as db:
                try:
                    if db.execute("select count(*) from runs").fetchone()[0] >= 2:
                        break
                except sqlite3.OperationalError:
                    pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = runs(store)
    assert 2 <= len(partial) < 8, "the kill should land mid-sweep"
    done = subprocess.run([*cmd, "--resume", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    result = json.loads(done.stdout)
    assert result["skipped"] == len(partial) and result["finished"] == 8 - len(partial)
    final = runs(store)
    assert len(final) == 8 and len({h for h, _ in final}) == 8 and all(s == "finished" for _, s in final)
    with sqlite3.connect(store) as db:
        counts = db.execute("select count(*) from samples group by run_id").fetchall()
    assert all(c == (120 * 2,) or c == (120,) for c in counts)  # linf cells have 2 eps, l2 cells 1


def test_dask_sweep_survives_a_killed_worker(tmp_path, checkpoints) -> None:
    pytest.importorskip("distributed")
    import distributed

    spec = load_sweep_spec(write_spec(tmp_path, [str(checkpoints / "a.safetensors"),
                                                 str(checkpoints / "b.safetensors")], n=150))
    killed = []
    original = distributed.as_completed

    def killing_as_completed(futures, *args, **kwargs):  # kill one worker once the first cell is back
        client = next(iter(futures)).client
        for i, future in enumerate(original(futures, *args, **kwargs)):
            if i == 0 and not killed:
                pids = client.run(os.getpid)
                victim = sorted(pids.values())[0]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
            yield future

    distributed.as_completed = killing_as_completed
    try:
        summary = run_sweep(spec, executor="dask", workers=2, progress=False)
    finally:
        distributed.as_completed = original
    assert killed, "a worker was killed"
    assert summary.finished + summary.failed == 8 and summary.finished == 8
    rows = runs(tmp_path / "results.db")
    assert len(rows) == 8 and all(s == "finished" for _, s in rows)


def test_sweep_logs_one_wandb_run_per_cell_and_a_summary(tmp_path, checkpoints, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    spec_path = write_spec(tmp_path, [str(checkpoints / "a.safetensors")], n=20)
    spec = load_sweep_spec(spec_path)
    summary = run_sweep(spec, progress=False, wandb_mode="offline")
    assert summary.finished == 4
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 5


def test_a_dask_shutdown_that_runs_over_is_logged_not_raised(caplog) -> None:
    from advbench.sweep import CLOSE_TIMEOUT_S, _close_within_bound

    class Stuck:
        def __init__(self) -> None:
            self.timeouts: list[float] = []

        def close(self, timeout: float) -> None:
            self.timeouts.append(timeout)
            raise TimeoutError("still closing")

    stuck = Stuck()
    with caplog.at_level("WARNING", logger="advbench.sweep"):
        _close_within_bound(stuck)
    assert stuck.timeouts == [CLOSE_TIMEOUT_S]
    assert "Stuck did not close cleanly: TimeoutError: still closing" in caplog.text
