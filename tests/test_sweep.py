"""Sweeps: spec validation with field and line (attacks, hyperparameters and budgets included), resume after
SIGKILL, failed cells (retried on both executors, then a non-zero exit), a Dask worker killed mid-sweep, Dask
warnings and shutdown as a user sees them on the terminal, W&B runs per cell, and store integrity."""

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


@pytest.mark.slow
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
    done = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=300)  # rerun = resume
    assert done.returncode == 0, done.stderr[-500:]
    result = json.loads(done.stdout)
    assert result["skipped"] == len(partial) and result["finished"] == 8 - len(partial)
    final = runs(store)
    assert len(final) == 8 and len({h for h, _ in final}) == 8 and all(s == "finished" for _, s in final)
    with sqlite3.connect(store) as db:
        counts = db.execute("select count(*) from samples group by run_id").fetchall()
    assert all(c == (120 * 2,) or c == (120,) for c in counts)  # linf cells have 2 eps, l2 cells 1


@pytest.mark.slow
def test_dask_sweep_survives_a_killed_worker(tmp_path, checkpoints) -> None:
    pytest.importorskip("distributed")
    spec = load_sweep_spec(write_spec(tmp_path, [str(checkpoints / "a.safetensors"),
                                                 str(checkpoints / "b.safetensors")], n=150))
    import advbench.pipeline.dask_executor as executor

    killed = []
    original = executor.task_result

    def kill_after_the_first_batch(future, retries):  # one worker dies once the first batch is back
        result = original(future, retries)
        if isinstance(result, tuple) and not killed:
            pids = future.client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        return result

    executor.task_result = kill_after_the_first_batch
    try:
        summary = run_sweep(spec, executor="dask", workers=2, progress=False)
    finally:
        executor.task_result = original
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
    from advbench.pipeline.dask_executor import CLOSE_TIMEOUT_S
    from advbench.pipeline.dask_executor import close_within_bound as _close_within_bound

    class Stuck:
        def __init__(self) -> None:
            self.timeouts: list[float] = []

        def close(self, timeout: float) -> None:
            self.timeouts.append(timeout)
            raise TimeoutError("still closing")

    stuck = Stuck()
    with caplog.at_level("WARNING", logger="advbench"):
        _close_within_bound(stuck)
    assert stuck.timeouts == [CLOSE_TIMEOUT_S]
    assert "Stuck did not close cleanly: TimeoutError: still closing" in caplog.text


# --- issue 18: exit codes, load-time attack checks, local retries, Dask warnings and shutdown, --resume ---------

ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory) -> Path:
    """A tiny mlp trained on digits for 2 epochs (cells of a few samples take a fraction of a second)."""
    from advbench.checkpoints import save_checkpoint
    from advbench.training import TrainConfig, train_classifier

    model, meta = train_classifier(TrainConfig(arch="mlp", dataset="digits", epochs=2, seed=0), progress=False)
    path = tmp_path_factory.mktemp("sweep-mlp") / "mlp.safetensors"
    save_checkpoint(model, path, meta)
    return path


def small_spec(folder: Path, models: list[str], attacks: str = "[{name: pgd, params: {steps: 2}}]",
               n: int = 10) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(f"name: small\nstore: results.db\nmodels: [{', '.join(models)}]\ndatasets: [digits]\n"
                    f"attacks: {attacks}\nnorms: [linf]\neps: [0.1]\ndefaults: {{n_samples: {n}}}\n")
    return path


@pytest.mark.parametrize(
    "text,match",
    [
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks: [pgd, pgdd]\neps: [0.1]\n",
         r"sweep.yaml:4: attacks.1: unknown attack 'pgdd'; known attacks: .*\bfgsm, .*\bpgd, "),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks:\n  - {name: pgd, params: {stepz: 3}}\neps: [0.1]\n",
         r"sweep.yaml:5: attacks.0.params.stepz: attack 'pgd' has no parameter 'stepz'; its parameters are: .*steps"),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks:\n  - cascade: [fgsm, pgd]\n    params:\n"
         "      pgd:\n        steps: ten\neps: [0.1]\n",
         r"sweep.yaml:8: attacks.0.params.pgd.steps: pgd.steps must be an integer, got 'ten'"),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks: [pgd]\nnorms: [l2, linf]\neps: [0.5, 8]\n",
         r"sweep.yaml:6: eps.1: linf eps 8 is larger than the whole \[0, 1\] pixel range.*did you mean 8/255\? "
         r"\(for norm linf\)"),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks: [pgd]\neps:\n  linf:\n    - 0.1\n    - 8\n",
         r"sweep.yaml:8: eps.linf.1: linf eps 8 is larger"),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks:\n  - {cascade: [fgsm], params: {pgd: {steps: 2}}}\n"
         "eps: [0.1]\n", r"sweep.yaml:5: attacks.0.params.pgd: params for 'pgd', which is not in this cascade"),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks:\n  - {name: pgd, params: {eps: 0.3}}\neps: [0.1]\n",
         r"sweep.yaml:5: attacks.0.params.eps: pgd.eps is set by the sweep's 'eps' field"),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks:\n  - {name: pgd, params: {steps: 0}}\neps: [0.1]\n",
         r"sweep.yaml:5: attacks.0.name: pgd: steps must be >= 1, got 0"),
        ("name: x\nmodels: [a]\ndatasets: [digits]\nattacks: [pgd, fgsm]\nnorms: [l1]\neps: [2]\n",
         r"sweep.yaml:4: attacks.1: attack 'fgsm' does not support norm 'l1'; it supports linf, l2"),
    ],
    ids=["unknown-attack", "unknown-param", "wrong-type", "linf-eps-over-1", "linf-eps-over-1-per-norm",
         "params-of-another-attack", "eps-as-param", "bad-value", "unsupported-norm"],
)
def test_attacks_and_budgets_are_checked_when_the_spec_is_loaded(tmp_path, text, match) -> None:
    (tmp_path / "sweep.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match) as caught:
        load_sweep_spec(tmp_path / "sweep.yaml")
    assert str(caught.value).count("\n") == 1, f"exactly one problem is reported:\n{caught.value}"


def test_every_attack_problem_is_reported_at_once(tmp_path) -> None:
    (tmp_path / "sweep.yaml").write_text(
        "name: x\nmodels: [a]\ndatasets: [digits]\nattacks:\n  - pgdd\n  - {name: fgsm, params: {loss: ce, stepz: 1}}\n"
        "eps: [0.1, 2]\n")
    with pytest.raises(ConfigError) as caught:
        load_sweep_spec(tmp_path / "sweep.yaml")
    lines = str(caught.value).splitlines()[1:]
    assert [line.split(": ")[0].rsplit("/", 1)[-1] for line in lines] == [
        "sweep.yaml:5", "sweep.yaml:6", "sweep.yaml:7"], lines


def test_local_executor_retries_a_failed_cell_then_records_it(tmp_path, mlp_checkpoint, monkeypatch) -> None:
    import advbench.sweep as sweep_module
    from advbench.errors import InputError
    from advbench.store import ResultsStore

    real = sweep_module.run_cell
    calls: list[int] = []
    transient = {"left": 2}

    def flaky(config, store, force=False):  # seed 1 fails twice, then works; seed 2 always fails; seed 3 is refused
        calls.append(config.seed)
        if config.seed == 1 and transient["left"] > 0:
            transient["left"] -= 1
            raise RuntimeError("CUDA out of memory (transient)")
        if config.seed == 2:
            raise RuntimeError("always broken")
        if config.seed == 3:
            raise InputError("a bad input fails the same way every time")
        return real(config, store, force)

    monkeypatch.setattr(sweep_module, "run_cell", flaky)
    path = small_spec(tmp_path, [str(mlp_checkpoint)])
    path.write_text(path.read_text() + "seeds: [0, 1, 2, 3]\n")
    summary = run_sweep(load_sweep_spec(path), progress=False, retries=2)
    assert (summary.finished, summary.failed) == (2, 2), "seed 1 finished on its third try; the sweep went on"
    assert calls.count(0) == 1 and calls.count(1) == 3 and calls.count(2) == 3, calls
    assert calls.count(3) == 1, "an advbench error is not retried"
    with ResultsStore(tmp_path / "results.db") as db:
        errors = {db.get_run(r["id"])["config"]["seed"]: db.get_run(r["id"])["error"]
                  for r in db.list_runs() if r["status"] == "failed"}
    assert errors[2].startswith("RuntimeError: always broken (after 3 attempt(s))")
    assert errors[3].startswith("InputError: a bad input")
    calls.clear()
    again = run_sweep(load_sweep_spec(path), progress=False, retries=0)
    assert (again.skipped, again.failed) == (2, 2), "retries=0: one try each, stored cells skipped"
    assert calls == [0, 1, 2, 3], "every cell is resolved by the pipeline; the stored ones compute nothing"


def test_cell_warnings_go_into_the_record_not_the_terminal(tmp_path, mlp_checkpoint, monkeypatch, capfd) -> None:
    import importlib
    import warnings

    module = importlib.import_module("advbench.experiments.classifier")
    real = module.cascade_batch

    def noisy(*args, **kwargs):  # every batch warns twice: recorded once per run
        for _ in range(2):
            warnings.warn("something odd in this cell", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "cascade_batch", noisy)
    summary = run_sweep(load_sweep_spec(small_spec(tmp_path, [str(mlp_checkpoint)])), progress=False)
    warned = summary.records[0]["metrics"]["warnings"]
    assert warned.count({"name": "UserWarning", "message": "something odd in this cell"}) == 1, "recorded once"
    assert "something odd" not in capfd.readouterr().err
    assert summary.finished == 1 and summary.warned == 1


def test_an_advbench_error_on_a_dask_worker_is_returned_not_retried(tmp_path) -> None:
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.dask_executor import Refused, plan_task

    refused = plan_task(RunConfig(models=[str(tmp_path / "missing.pt")], dataset="digits", attacks=["fgsm"],
                                  eps=[0.1], n_samples=4))
    assert isinstance(refused, Refused) and "missing.pt" in refused.error, refused


@pytest.mark.slow
def test_dask_computes_no_batch_when_every_cell_is_stored(tmp_path, mlp_checkpoint, monkeypatch) -> None:
    """The driver loads no model and reads no data, so a worker resolves each cell to learn its hash; a stored
    cell then submits no batch."""
    pytest.importorskip("distributed")
    import advbench.pipeline.dask_executor as executor

    spec_path = small_spec(tmp_path, [str(mlp_checkpoint)])
    assert run_sweep(load_sweep_spec(spec_path), progress=False).finished == 1

    def no_batch(*args, **kwargs):
        raise AssertionError("a batch was computed for a stored cell")

    monkeypatch.setattr(executor, "batch_task", no_batch)
    summary = run_sweep(load_sweep_spec(spec_path), executor="dask", workers=1, progress=False)
    assert (summary.skipped, summary.finished, summary.failed) == (1, 0, 0)


def test_sweep_resume_is_removed_with_a_pointer(tmp_path, run_cli) -> None:
    code, _, err = run_cli("sweep", str(tmp_path / "missing.yaml"), "--resume")
    assert code == 2 and "--resume was removed: a rerun always skips the cells already stored" in err
    code, out, _ = run_cli("sweep", "--help")
    assert code == 0 and "--resume" not in out and "Cells already in the store are skipped" in out


@pytest.mark.slow
def test_sweep_exits_nonzero_when_a_cell_failed(tmp_path, mlp_checkpoint) -> None:
    spec_path = small_spec(tmp_path, [str(mlp_checkpoint), str(tmp_path / "missing.pt")])
    cmd = [sys.executable, "-m", "advbench", "sweep", str(spec_path)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-800:]
    assert f"1 of 2 cells failed; see `advbench results list --store {tmp_path / 'results.db'}`" in done.stderr
    small_spec(tmp_path, [str(mlp_checkpoint)])  # the good cell only: stored, so skipped
    done = subprocess.run([*cmd, "--json"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    assert json.loads(done.stdout) | {"store": None} == {"cells": 1, "skipped": 1, "finished": 0, "failed": 0,
                                                         "warned": 0, "store": None}


DRIVER = '''"""`advbench` with two additions that reach the Dask worker processes too (a spawned worker imports the
driver's main module as __mp_main__): an attack that raises a Python warning, and a worker whose interpreter
takes SLOW_EXIT_S seconds to tear down (as torch's can on a busy machine)."""
import atexit
import os
import sys
import time
import warnings

from advbench.attack import register_attack
from advbench.attacks.pgd import FGSM

if __name__ == "__mp_main__":
    atexit.register(time.sleep, float(os.environ["SLOW_EXIT_S"]))


@register_attack("noisy-fgsm")
class NoisyFGSM(FGSM):
    def _attack(self, ctx, x):
        warnings.warn("noisy-fgsm was here", UserWarning, stacklevel=1)
        return super()._attack(ctx, x)


if __name__ == "__main__":
    from advbench.cli import main

    sys.argv = ["advbench", *sys.argv[1:]]
    main()
'''


@pytest.mark.slow
def test_dask_sweep_keeps_the_terminal_clean_and_closes_its_workers(tmp_path, mlp_checkpoint) -> None:
    """Real processes: the CLI driver, a LocalCluster, its worker processes.  Without the fix a worker's
    warning reached the terminal as raw source lines, and a worker slower than 4 s to exit was killed
    with "Worker process still alive after 4.0 seconds, killing"."""
    pytest.importorskip("distributed")
    (tmp_path / "driver.py").write_text(DRIVER)
    spec_path = small_spec(tmp_path, [str(mlp_checkpoint)], attacks="[noisy-fgsm, {name: pgd, params: {steps: 2}}]")
    cmd = [sys.executable, str(tmp_path / "driver.py"), "sweep", str(spec_path), "--executor", "dask",
           "--workers", "2", "--json"]
    done = subprocess.run(cmd, env={**ENV, "SLOW_EXIT_S": "6"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "still alive" not in done.stderr, done.stderr[-1500:]
    assert "noisy-fgsm was here" not in done.stderr and "warnings.warn" not in done.stderr, done.stderr[-1500:]
    assert "Traceback" not in done.stderr and "WARNING" not in done.stderr, done.stderr[-1500:]
    assert json.loads(done.stdout)["finished"] == 2
    from advbench.store import ResultsStore

    with ResultsStore(tmp_path / "results.db") as db:
        recorded = {db.get_run(r["id"])["config"]["attacks"][0]["name"]: db.get_run(r["id"])["metrics"]["warnings"]
                    for r in db.list_runs()}
    assert recorded["noisy-fgsm"] == [{"name": "UserWarning", "message": "noisy-fgsm was here"}]
    assert recorded["pgd"] == []
