"""Tests of advbench.store.ResultsStore: round trips, replacement rules, exports and crash safety."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import advbench.store as store_mod
from advbench.errors import ConfigError, StoreError
from advbench.store import ResultsStore

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_record(config_hash: str = "a1b2c3d4" * 8, *, n: int = 4, robust_accuracy: float = 0.25, **over):
    samples = [
        {
            "sample_index": i // 2,
            "eps": 0.1 * (1 + i % 2),
            "label": i % 10,
            "clean_pred": i % 10,
            "clean_correct": True,
            "robust": i % 4 == 0,
            "adv_pred": None if i % 4 == 0 else (i + 1) % 10,
            "broken_by": None if i % 4 == 0 else "pgd",
            "perturbation_norm": 0.05 * i,
            "restarts": i,  # not a column: goes through extra_json
        }
        for i in range(n)
    ]
    record = {
        "config": {"attack": {"name": "pgd", "steps": 10}, "eps": [0.1, 0.2], "seed": 0, "name": "pgd-run"},
        "config_hash": config_hash,
        "code_version": "0.1.0+gitabc1234",
        "versions": {"torch": "2.14.1", "python": "3.11"},
        "device": "cpu",
        "metrics": {
            "clean_accuracy": 1.0,
            "robust_accuracy": robust_accuracy,
            "attack_success_rate": 1 - robust_accuracy,
            "n_samples": n,
            "curve": [
                {"eps": 0.1, "robust_accuracy": 0.5, "attack_success_rate": 0.5},
                {"eps": 0.2, "robust_accuracy": robust_accuracy, "attack_success_rate": 1 - robust_accuracy},
            ],
        },
        "cost": {"gradients": 1234, "queries": 2345, "wall_time_s": 3.2},
        "status": "finished",
        "error": None,
        "created_at": "2026-11-26T02:00:00+00:00",
        "samples": samples,
    }
    record.update(over)
    return record


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "sub" / "results.db") as s:
        yield s


def test_round_trip(store, tmp_path):
    record = make_record()
    run_id = store.write_run(copy.deepcopy(record))
    assert (tmp_path / "sub" / "results.db").is_file()
    got = store.get_run(run_id, with_samples=True)
    assert got["id"] == run_id
    assert got["name"] == "pgd-run"
    for key in ("config", "config_hash", "code_version", "versions", "device", "metrics", "cost", "status", "error"):
        assert got[key] == record[key], key
    assert got["created_at"] == record["created_at"]
    assert got["samples"] == record["samples"]
    assert isinstance(got["samples"][0]["robust"], bool)
    assert "samples" not in store.get_run(run_id)
    assert store.samples(run_id) == record["samples"]
    assert store.count_samples(run_id) == 4
    # lookups by full hash, hash prefix and digit string
    assert store.get_run(record["config_hash"])["id"] == run_id
    assert store.get_run(record["config_hash"][:8])["id"] == run_id
    assert store.get_run(str(run_id))["id"] == run_id


def test_has_run_and_duplicate_write(store):
    record = make_record()
    assert not store.has_run(record["config_hash"])
    store.write_run(record)
    assert store.has_run(record["config_hash"])
    with pytest.raises(StoreError, match="force"):
        store.write_run(make_record(robust_accuracy=0.75))
    assert store.get_run(record["config_hash"])["metrics"]["robust_accuracy"] == 0.25


def test_force_replaces_run_and_samples(store):
    first = store.write_run(make_record(n=6))
    second = store.write_run(make_record(n=3, robust_accuracy=0.75), force=True)
    assert len(store) == 1
    assert [r["id"] for r in store.list_runs()] == [second]
    assert second != first
    got = store.get_run(second, with_samples=True)
    assert got["metrics"]["robust_accuracy"] == 0.75
    assert len(got["samples"]) == 3
    n_rows = store.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    assert n_rows == 3  # the old run's rows went with it (ON DELETE CASCADE)
    with pytest.raises(StoreError, match="advbench results list"):
        store.get_run(first)


def test_failed_run_is_retried_without_force(store):
    failed = make_record(status="failed", error="CUDA out of memory", n=2)
    failed["metrics"] = {}
    store.write_run(failed)
    assert not store.has_run(failed["config_hash"])
    run_id = store.write_run(make_record(n=5))
    assert store.has_run(failed["config_hash"])
    got = store.get_run(run_id, with_samples=True)
    assert got["status"] == "finished" and got["error"] is None
    assert len(got["samples"]) == 5
    assert len(store) == 1


def test_list_runs_newest_first(store):
    store.write_run(make_record("11" * 32, created_at="2026-11-26T01:00:00+00:00"))
    store.write_run(make_record("22" * 32, created_at="2026-11-26T03:00:00+00:00", robust_accuracy=0.5))
    store.write_run(make_record("33" * 32, created_at="2026-11-26T02:00:00+00:00"))
    runs = store.list_runs()
    assert [r["config_hash"][:2] for r in runs] == ["22", "33", "11"]
    assert runs[0]["robust_accuracy"] == 0.5
    assert set(runs[0]) >= {"id", "config_hash", "name", "status", "created_at", "clean_accuracy", "robust_accuracy"}


def test_export_csv_and_json(store, tmp_path):
    a = store.write_run(make_record("11" * 32, n=2))
    b = store.write_run(make_record("22" * 32, n=3, robust_accuracy=0.5))

    out_csv = tmp_path / "exports" / "runs.csv"
    text = store.export("csv", out_csv)
    assert out_csv.read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["id"]) for r in rows] == [a, b]
    assert [r["config_hash"] for r in rows] == ["11" * 32, "22" * 32]
    assert float(rows[1]["metrics.robust_accuracy"]) == 0.5
    assert rows[0]["config.attack.name"] == "pgd"
    assert rows[0]["cost.gradients"] == "1234"
    assert "metrics.curve" not in rows[0]  # lists are not flattened into columns

    out_json = tmp_path / "runs.json"
    text = store.export("JSON", out_json)
    records = json.loads(out_json.read_text())
    assert records == json.loads(text)
    assert [r["id"] for r in records] == [a, b]
    assert [len(r["samples"]) for r in records] == [2, 3]
    assert records[1]["metrics"]["curve"][1]["robust_accuracy"] == 0.5
    assert not [p for p in out_json.parent.iterdir() if p.name.endswith(".tmp")]

    with pytest.raises(ConfigError, match="csv"):
        store.export("xlsx")


def test_integrity_and_wal(store):
    store.write_run(make_record())
    assert store.integrity_check() == "ok"
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION


def test_interrupted_write_leaves_nothing(store, monkeypatch):
    store.write_run(make_record("11" * 32, n=3))
    calls = {"n": 0}
    real = store_mod._sample_row

    def flaky(run_id, index, sample):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of the sample inserts
        return real(run_id, index, sample)

    monkeypatch.setattr(store_mod, "_sample_row", flaky)
    with pytest.raises(KeyboardInterrupt):
        store.write_run(make_record("22" * 32, n=20))
    # the forced replacement of an existing run must not delete the old one either
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        store.write_run(make_record("11" * 32, n=20), force=True)
    monkeypatch.setattr(store_mod, "_sample_row", real)

    assert not store.conn.in_transaction
    assert [r["config_hash"] for r in store.list_runs()] == ["11" * 32]
    assert store.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 3
    assert store.integrity_check() == "ok"
    # and the store is still writable afterwards
    store.write_run(make_record("22" * 32, n=20))
    assert store.count_samples("22" * 32) == 20


def test_invalid_sample_rolls_back(store):
    record = make_record(n=3)
    record["samples"].append("not a dict")
    with pytest.raises(StoreError, match=r"samples\[3\]"):
        store.write_run(record)
    assert len(store) == 0
    assert store.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0


@pytest.mark.parametrize("key", ["config_hash", "config", "metrics"])
def test_missing_key(store, key):
    record = make_record()
    del record[key]
    with pytest.raises(StoreError, match=key):
        store.write_run(record)


def test_unknown_run(store):
    store.write_run(make_record())
    for key in (999, "deadbeef00", "nope"):
        with pytest.raises(StoreError, match="advbench results list"):
            store.get_run(key)


def test_ambiguous_prefix(store):
    store.write_run(make_record("abcdef01" * 8))
    store.write_run(make_record("abcdef02" * 8))
    with pytest.raises(StoreError, match="matches 2 runs"):
        store.get_run("abcdef0")
    assert store.get_run("abcdef02")["config_hash"] == "abcdef02" * 8


def test_bad_paths(tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="corrupt.db"):
        ResultsStore(corrupt)
    with pytest.raises(StoreError, match="directory"):
        ResultsStore(tmp_path)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not an advbench results store"):
        ResultsStore(other)


def test_closed_store(tmp_path):
    s = ResultsStore(tmp_path / "r.db")
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.list_runs()


def test_two_connections_share_the_file(tmp_path):
    path = tmp_path / "shared.db"
    with ResultsStore(path) as writer, ResultsStore(path) as reader:
        writer.write_run(make_record("11" * 32))
        assert reader.has_run("11" * 32)
        with pytest.raises(StoreError, match="force"):
            reader.write_run(make_record("11" * 32))
        reader.write_run(make_record("22" * 32, n=7))
        assert writer.count_samples("22" * 32) == 7


_CHILD = """
import sys
from advbench.store import ResultsStore

store = ResultsStore(sys.argv[1])
i = 0
while True:
    n = 400 + (i * 37) % 600
    samples = [{"sample_index": j, "eps": 0.1, "label": j % 10, "clean_pred": j % 10, "clean_correct": True,
                "robust": j % 3 == 0, "adv_pred": 1, "broken_by": "pgd", "perturbation_norm": 0.1}
               for j in range(n)]
    store.write_run({"config_hash": f"{i:064x}", "config": {"i": i}, "metrics": {"n_samples": n},
                     "samples": samples})
    i += 1
    print(i, flush=True)
"""


def test_sigkill_mid_write_leaves_consistent_store(tmp_path):
    path = tmp_path / "killed.db"
    ResultsStore(path).close()  # create the schema before the child starts
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        written = 0
        while written < 5:  # let it commit a few runs, then kill it at an arbitrary point
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer process died: {proc.stderr.read()}")
            written = int(line)
            assert time.monotonic() < deadline, "writer process too slow"
        time.sleep(0.013)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    with ResultsStore(path) as store:
        assert store.integrity_check() == "ok"
        runs = store.list_runs()
        assert len(runs) >= 5
        for summary in runs:
            record = store.get_run(summary["id"])
            assert store.count_samples(summary["id"]) == record["metrics"]["n_samples"]
        orphans = store.conn.execute("SELECT COUNT(*) FROM samples WHERE run_id NOT IN (SELECT id FROM runs)")
        assert orphans.fetchone()[0] == 0
        # still writable after the crash
        store.write_run(make_record())
        assert store.integrity_check() == "ok"
