"""Edges of the one pipeline: a Dask driver in a fresh process, stale worker caches, shards finishing at once,
eps curves given in any order, folders that mix grayscale and RGB, failed records and bad worker counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advbench.errors import ConfigError
from advbench.pipeline.config import RunConfig
from advbench.pipeline.engine import PlanInfo, finish, make_experiment, run
from advbench.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(checkpoint: str, **overrides) -> RunConfig:
    fields = {"models": [checkpoint], "dataset": "digits", "attacks": ["fgsm"], "eps": ["0.1"], "n_samples": 40,
              "batch_size": 16, "seed": 3}
    return RunConfig.build(**{**fields, **overrides})


_DRIVER = """
import json, sys
from advbench.pipeline.config import RunConfig
from advbench.pipeline.engine import run

outcome = run(RunConfig(**json.loads(sys.argv[1])), store=sys.argv[2], executor="dask", workers=2, progress=False)
print(json.dumps({"hash": outcome.config_hash, "metrics": outcome.record.metrics}))
"""


@pytest.mark.slow
def test_the_api_runs_on_dask_from_a_fresh_interpreter(digits_model, tmp_path) -> None:
    """The driver process has imported none of the experiments when it merges: it must find them itself."""
    config = _config(digits_model.checkpoint_file)
    reference = run(config, store=tmp_path / "ref.db", progress=False)
    store = tmp_path / "dask.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _DRIVER, config.model_dump_json(), str(store)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    assert payload["hash"] == reference.config_hash
    assert payload["metrics"] == json.loads(json.dumps(reference.record.metrics))
    rows = []
    for path in (tmp_path / "ref.db", store):
        with ResultsStore(path) as db:
            rows.append(json.dumps(db.samples(db.finished_run_id(reference.config_hash)), sort_keys=True))
    assert rows[0] == rows[1]  # the same per-sample rows, byte for byte


def test_a_worker_re_resolves_a_run_whose_inputs_changed(digits_model, tmp_path, monkeypatch) -> None:
    from advbench.pipeline import dask_executor

    monkeypatch.setattr(dask_executor, "_RESOLVED", type(dask_executor._RESOLVED)())
    config = _config(digits_model.checkpoint_file)
    _, _, plan = dask_executor._resolved(config)
    good = plan.config.config_hash()
    index, result = dask_executor.remote_batch(config, 1, good)
    assert index == 1 and len(result["samples"]) == 16
    with pytest.raises(ConfigError, match="inputs changed"):  # the plan the driver holds is another run's
        dask_executor.remote_batch(config, 1, "0" * 64)
    for n in range(3):  # the cache is bounded: older runs' models are dropped
        dask_executor._resolved(_config(digits_model.checkpoint_file, seed=10 + n))
    assert len(dask_executor._RESOLVED) == dask_executor.RESOLVED_CACHE_SIZE


def test_a_shard_that_finishes_after_another_merged_reports_the_stored_run(digits_model, tmp_path) -> None:
    config = _config(digits_model.checkpoint_file)
    name, experiment = make_experiment(config)
    info = PlanInfo.of(name, experiment.resolve())
    store = tmp_path / "r.db"
    first = run(config, store=store, shard=(1, 2), progress=False)
    assert not first.complete
    second = run(config, store=store, shard=(2, 2), progress=False)  # merges; the batches go with the merge
    assert second.complete and not second.skipped
    with ResultsStore(store) as db:
        assert db.committed_batches(info.config_hash) == set()
        late = finish(db, experiment, info, "cpu", force=False)  # shard 1, finishing just after shard 2 merged
    assert late.complete and late.skipped and late.record.id == second.record.id


def test_a_store_keeps_the_first_record_and_drops_the_batches_of_a_losing_writer(tmp_path) -> None:
    with ResultsStore(tmp_path / "r.db") as db:
        record = {"config": {"dataset": "digits"}, "config_hash": "ab" * 32, "metrics": {"robust_accuracy": 0.5}}
        assert db.save_run(record).written
        db.commit_batch("ab" * 32, 0, {"samples": []})  # a late writer's batch, after the merge
        saved = db.save_run({**record, "metrics": {"robust_accuracy": 0.25}})
        assert not saved.written and saved.existing["metrics"]["robust_accuracy"] == 0.5
        assert db.committed_batches("ab" * 32) == set()


def test_an_eps_curve_is_one_run_whatever_its_order_or_repeats() -> None:
    base = {"models": ["small_cnn?random=true"], "dataset": "digits", "attacks": ["fgsm"]}
    one = RunConfig.build(**base, eps="8/255,2/255,8/255")
    two = RunConfig.build(**base, eps=[2 / 255, 8 / 255])
    assert one.eps == two.eps == [2 / 255, 8 / 255]
    assert one.model_dump_json() == two.model_dump_json()


def _folder(root: Path, modes: tuple[str, str] = ("L", "RGB")) -> Path:
    """Two classes; class 'a' holds only images of mode ``modes[0]``, class 'b' only of ``modes[1]``."""
    rng = np.random.default_rng(0)
    for label, mode in zip(("a", "b"), modes, strict=True):
        (root / label).mkdir(parents=True)
        for i in range(6):
            shape = (16, 16) if mode == "L" else (16, 16, 3)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / label / f"{i}.png")
    return root


def test_every_batch_of_a_mixed_folder_has_the_same_channels(tmp_path) -> None:
    from advbench.datasets.evaluation_set import open_evaluation_set

    root = _folder(tmp_path / "mixed")
    stream = open_evaluation_set(f"imagefolder:{root}", selection="first")
    gray_only = [i for i, sid in enumerate(stream.sample_ids) if sid.startswith("a/")]
    rgb_only = [i for i, sid in enumerate(stream.sample_ids) if sid.startswith("b/")]
    assert stream.read(gray_only).shape[1] == stream.read(rgb_only).shape[1] == 3
    gray_root = _folder(tmp_path / "gray", ("L", "L"))
    gray = open_evaluation_set(f"imagefolder:{gray_root}", selection="first")  # an all-grayscale folder stays gray
    assert gray.read([0, 1]).shape[1] == 1
    fixed = open_evaluation_set(f"imagefolder:{root}", selection="first", channels=1)
    assert fixed.read(rgb_only).shape[1] == 1


def test_results_show_prints_a_failed_record_and_its_error(tmp_path, run_cli) -> None:
    from advbench.sweep import failed_record

    store = tmp_path / "r.db"
    with ResultsStore(store) as db:
        db.write_run(failed_record({"models": ["m"], "dataset": "digits", "attacks": ["fgsm"], "eps": [0.1]},
                                   "cd" * 32, "ValueError: the weights file is truncated"), force=True)
    code, out, _ = run_cli("results", "show", "1", "--store", str(store))
    assert code == 0 and "failed" in out and "the weights file is truncated" in out


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--loader-workers", "-1")])
def test_negative_or_zero_worker_counts_are_refused(run_cli, flag, value) -> None:
    code, _, err = run_cli("run", "--model", "small_cnn?random=true", "--dataset", "digits", "--attack", "fgsm",
                           "--eps", "0.1", flag, value)
    assert code == 2 and flag in err


def test_loader_workers_are_refused_on_dask(digits_model) -> None:
    with pytest.raises(ConfigError, match="--loader-workers is for --executor local"):
        run(_config(digits_model.checkpoint_file), executor="dask", loader_workers=2, progress=False)
