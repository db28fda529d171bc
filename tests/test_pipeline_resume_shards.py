"""The one pipeline: resume after SIGKILL, shards, Dask workers (one lost mid-run), and stores from before it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from advbench.pipeline.config import RunConfig
from advbench.pipeline.engine import run
from advbench.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_thread")

# The subprocess that runs a config and kills itself with SIGKILL at a chosen point.
_KILLER = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from advbench.attack import Attack
    from advbench.experiments.classifier import ClassifierExperiment
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.engine import run
    from advbench.store import ResultsStore

    mode, store, config = sys.argv[1], sys.argv[2], RunConfig(**json.loads(sys.argv[3]))
    state = {"batch": None, "calls": 0}
    commit, compute, call = ResultsStore.commit_batch, ClassifierExperiment.compute, Attack.__call__

    def commit_then_die(self, digest, batch, result):
        written = commit(self, digest, batch, result)
        if mode == "between" and batch == 1:  # batch 1 is in the store, batch 2 not started
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    def track(self, batch, *args, **kwargs):
        state["batch"], state["calls"] = batch, 0
        return compute(self, batch, *args, **kwargs)

    def call_then_die(self, *args, **kwargs):
        out = call(self, *args, **kwargs)
        state["calls"] += 1
        if mode == "within" and state["batch"] == 2 and state["calls"] == 2:  # half-way through batch 2
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    ResultsStore.commit_batch, ClassifierExperiment.compute, Attack.__call__ = commit_then_die, track, call_then_die
    run(config, store=store, progress=False)
""")


def _config(checkpoint: str, **overrides) -> RunConfig:
    fields = {"models": [checkpoint], "dataset": "digits", "attacks": ["fgsm", "pgd"], "eps": ["0.05", "0.1"],
              "n_samples": 120, "batch_size": 24, "seed": 5, "attack_params": {"pgd": {"steps": 5}}}
    return RunConfig.build(**{**fields, **overrides})


def _stored(store: Path, digest: str) -> tuple[str, str, dict]:
    """The stored record's config, metrics and sample rows as canonical text, and its cost."""
    with ResultsStore(store) as db:
        run_id = db.finished_run_id(digest)
        record = db.get_run(run_id)
        rows = db.samples(run_id)
    body = json.dumps({k: record[k] for k in ("config", "config_hash", "name", "metrics", "status")}, sort_keys=True)
    return body, json.dumps(rows, sort_keys=True), record["cost"]


@pytest.fixture(scope="module")
def reference(digits_model, tmp_path_factory):
    """An uninterrupted run's stored record."""
    store = tmp_path_factory.mktemp("ref") / "r.db"
    outcome = run(_config(digits_model.checkpoint_file), store=store, progress=False)
    assert outcome.complete and outcome.total == 5
    return outcome.config_hash, _stored(store, outcome.config_hash)


@pytest.mark.parametrize("mode, committed_when_killed", [("between", 2), ("within", 2)])
def test_sigkilled_run_resumes_to_the_uninterrupted_record(digits_model, reference, tmp_path, mode,
                                                          committed_when_killed) -> None:
    config = _config(digits_model.checkpoint_file)
    store = tmp_path / "r.db"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, "-c", _KILLER, mode, str(store), config.model_dump_json()], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    digest, (body, rows, cost) = reference
    with ResultsStore(store) as db:
        assert db.finished_run_id(digest) is None
        assert db.committed_batches(digest) == set(range(committed_when_killed))
    computed = []
    from advbench.experiments.classifier import ClassifierExperiment

    original = ClassifierExperiment.compute

    def spy(self, batch, *args, **kwargs):
        computed.append(batch)
        return original(self, batch, *args, **kwargs)

    ClassifierExperiment.compute = spy
    try:
        outcome = run(config, store=store, progress=False)
    finally:
        ClassifierExperiment.compute = original
    assert outcome.complete and not outcome.skipped
    assert computed == [2, 3, 4]  # resumed at the first unfinished batch
    resumed_body, resumed_rows, resumed_cost = _stored(store, digest)
    assert resumed_body == body  # byte for byte: config, hash, name, metrics
    assert resumed_rows == rows  # byte for byte: every per-sample row
    assert {k: resumed_cost[k] for k in ("gradients", "queries")} == {k: cost[k] for k in ("gradients", "queries")}
    with ResultsStore(store) as db:
        assert db.committed_batches(digest) == set()  # merged into the record in the same transaction


def test_shards_merge_into_the_single_run_record(digits_model, reference, tmp_path, run_cli) -> None:
    digest, (body, rows, _) = reference
    store = tmp_path / "r.db"
    args = ["run", "--model", digits_model.checkpoint_file, "--dataset", "digits", "--attack", "fgsm,pgd",
            "--eps", "0.05,0.1", "--n-samples", "120", "--batch-size", "24", "--seed", "5",
            "--param", "pgd.steps=5", "--store", str(store), "--json"]
    for index in (3, 1):
        code, out, _ = run_cli(*args, "--shard", f"{index}/3")
        assert code == 0
        payload = json.loads(out)
        assert payload["complete"] is False and payload["config_hash"] == digest
    code, out, _ = run_cli(*args, "--shard", "2/3")
    assert code == 0 and json.loads(out)["config_hash"] == digest and "robust_accuracy" in json.loads(out)
    assert _stored(store, digest)[:2] == (body, rows)
    code, out, _ = run_cli(*args, "--shard", "2/3")  # every shard of a finished run is answered from the store
    assert code == 0 and json.loads(out)["skipped"] is True
    code, _, err = run_cli(*args, "--shard", "4/3")
    assert code == 2 and "--shard 4/3" in err
    code, _, err = run_cli(*args, "--shard", "1/2", "--force")
    assert code == 2 and "--force" in err


@pytest.mark.slow
def test_three_dask_workers_give_the_single_process_record(digits_model, reference, tmp_path, monkeypatch) -> None:
    import advbench.experiments.classifier as classifier
    import advbench.pipeline.victim as victim

    def not_here(*args, **kwargs):
        raise AssertionError("the Dask driver loaded a model or read data")

    monkeypatch.setattr(victim, "open_victim", not_here)  # the workers are other processes: they load; we must not
    monkeypatch.setattr(classifier.ClassifierExperiment, "resolve", not_here)
    digest, (body, rows, _) = reference
    store = tmp_path / "r.db"
    outcome = run(_config(digits_model.checkpoint_file), store=store, executor="dask", workers=3, progress=False)
    assert outcome.complete and outcome.config_hash == digest
    assert _stored(store, digest)[:2] == (body, rows)


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_recomputed_and_nothing_counts_twice(digits_model, tmp_path) -> None:
    from distributed import Client, LocalCluster

    from advbench.pipeline.dask_executor import run_on_dask

    config = _config(digits_model.checkpoint_file, attacks=["pgd"], eps=["0.1"], batch_size=8, n_samples=96,
                     attack_params={"pgd": {"steps": 150}})
    single = run(config, store=None, progress=False).record
    store = tmp_path / "r.db"
    killed: list[int] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)

        def kill_a_busy_worker() -> None:
            deadline = time.time() + 240
            while time.time() < deadline and not killed:
                with ResultsStore(store) as db:
                    done = len(db.committed_batches(single.config_hash)) if store.exists() else 0
                busy = [w for w, tasks in client.processing().items() if tasks]
                if done >= 1 and busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(pids[busy[0]])
                time.sleep(0.05)

        watcher = threading.Thread(target=kill_a_busy_worker, daemon=True)
        watcher.start()
        with ResultsStore(store) as db:
            outcome = run_on_dask(config, db, force=False, shard=(1, 1), scheduler=None, workers=None,
                                  progress=False, wandb=None, client=client)
        watcher.join(timeout=5)
    assert killed, "no worker was killed: the run ended before the watcher saw a committed batch"
    assert outcome.complete
    indices = [row["sample_index"] for row in outcome.record.samples]
    assert sorted(indices) == list(range(96))  # every sample once: none lost, none counted twice
    assert outcome.record.metrics == single.metrics and outcome.record.samples == single.samples


def test_a_store_from_before_the_pipeline_still_reads(tmp_path, run_cli) -> None:
    from advbench.pipeline.record import Record
    from advbench.store import _SCHEMA

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(_SCHEMA)
    conn.execute("PRAGMA user_version = 1")
    old_hash = "0f" * 32
    config = {"model": {"name": "cnn"}, "dataset": "digits", "norm": "linf", "eps": [0.1],
              "attacks": [{"name": "pgd", "steps": 10}], "seed": 0, "n_samples": 2}
    conn.execute("INSERT INTO runs (config_hash, name, status, created_at, config_json, metrics_json, cost_json) "
                 "VALUES (?, ?, 'finished', '2026-01-01T00:00:00+00:00', ?, ?, ?)",
                 (old_hash, "cnn|digits|pgd|linf|eps=0.1", json.dumps(config),
                  json.dumps({"clean_accuracy": 1.0, "robust_accuracy": 0.5, "attack_success_rate": 0.5, "eps": 0.1}),
                  json.dumps({"gradients": 20})))
    conn.execute("INSERT INTO samples (run_id, sample_index, eps, label, robust) VALUES (1, 0, 0.1, 3, 1)")
    conn.commit()
    conn.close()
    with ResultsStore(path) as db:  # upgraded in place to the batches schema; the old record keeps its hash
        assert db.conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert [r["config_hash"] for r in db.list_runs()] == [old_hash]
        record = Record.from_stored(db.get_run(old_hash[:8], with_samples=True))
        assert record.config_hash == old_hash and record.metrics["robust_accuracy"] == 0.5
        assert record.samples[0]["label"] == 3 and record.experiment == "classifier"
        assert db.commit_batch("ab" * 32, 0, {"n": 1}) and db.committed_batches("ab" * 32) == {0}
    code, out, _ = run_cli("results", "list", "--store", str(path))
    assert code == 0 and old_hash[:12] in out


def test_several_gpus_get_one_dask_cuda_worker_each(monkeypatch) -> None:
    """Without GPUs here: torch reports two, and a stand-in dask_cuda records how its cluster is asked for."""
    import types

    import torch

    from advbench.pipeline import dask_executor

    asked: list[dict] = []

    class Stop(Exception):
        pass

    def cuda_cluster(**kwargs):
        asked.append(kwargs)
        raise Stop

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=cuda_cluster))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(Stop), dask_executor.dask_client():
        pass
    assert asked == [{"host": "127.0.0.1", "dashboard_address": None, "threads_per_worker": 1}]
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # not installed: a clear error, not a CPU fallback
    from advbench.errors import ConfigError

    with pytest.raises(ConfigError, match="pip install dask-cuda"), dask_executor.dask_client():
        pass
