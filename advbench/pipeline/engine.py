"""The one pipeline: resolve an experiment, compute its batches (streamed, resumable, sharded), merge one record.

``run(config)``:

1. the experiment for the config (:func:`advbench.experiments.choose_experiment`) resolves it into a
   :class:`~advbench.pipeline.experiment.Plan`; the resolved config's hash names the run;
2. a finished record with that hash is returned as it is (unless ``force``);
3. the batches of this shard that the store does not hold yet are read through a ``DataLoader`` and
   computed one by one, each with a generator seeded from (seed, batch index), and each batch's result is
   committed to the store in one transaction;
4. once every batch of the run is committed (by this process, by earlier interrupted attempts, or by other
   shards) they are merged, in batch order, into one :class:`~advbench.pipeline.record.Record`, which
   replaces the batches in one transaction.

A killed run, rerun with the same config, continues at its first uncommitted batch and ends with the record
an uninterrupted run writes (only wall times and the creation time differ).  Host memory is bounded by the
batch size and the loader's prefetch; device memory by the batch size.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advbench.errors import ConfigError
from advbench.pipeline.config import RunConfig
from advbench.pipeline.experiment import EXPERIMENTS, Experiment, Plan, batch_generator
from advbench.pipeline.record import Record
from advbench.pipeline.shards import shard_batches

log = logging.getLogger("advbench")


@dataclass
class PlanInfo:
    """A plan as plain data (what a Dask worker sends back to the driver)."""

    experiment: str
    config: dict[str, Any]
    config_hash: str
    n_samples: int
    batch_size: int
    warnings: list[str]

    @property
    def n_batches(self) -> int:
        return -(-self.n_samples // self.batch_size) if self.n_samples else 0

    @classmethod
    def of(cls, name: str, plan: Plan) -> PlanInfo:
        return cls(name, plan.config.as_dict(), plan.config.config_hash(), plan.n_samples, plan.batch_size,
                   list(plan.warnings))


@dataclass
class Outcome:
    """What :func:`run` did: the record (``None`` while shards are missing), whether it came from the store,
    and how many of the run's batches are committed."""

    record: Record | None
    skipped: bool
    committed: int
    total: int
    config_hash: str
    experiment: Experiment | None = None

    @property
    def complete(self) -> bool:
        return self.record is not None


def experiment_class(name: str) -> type[Experiment]:
    """The registered experiment ``name`` (the built-in ones are imported first: a Dask driver that merges a
    record has imported nothing else of them)."""
    import advbench.experiments  # noqa: F401 - registers the built-in experiments

    return EXPERIMENTS.get(name)


def make_experiment(config: RunConfig) -> tuple[str, Experiment]:
    """The experiment object that runs ``config`` (not yet resolved)."""
    from advbench.experiments import choose_experiment

    name = choose_experiment(config)
    return name, experiment_class(name)(config)


def default_loader_workers(config: RunConfig) -> int:
    """DataLoader worker processes: image folders are decoded in parallel (up to 4, leaving one core for the
    model); in-memory sets are read in the main process."""
    if not config.dataset.strip().lower().startswith("imagefolder:"):
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def stream_batches(experiment: Experiment, plan_batches: Callable[[int], Any], batches: Sequence[int], *,
                   workers: int = 0, pin_memory: bool = False) -> Iterable[tuple[int, Any, Any]]:
    """``(batch, indices, inputs)`` for each batch in ``batches``, read through a DataLoader."""
    from torch.utils.data import DataLoader

    if not batches:
        return
    index_lists = [plan_batches(b) for b in batches]
    loader = DataLoader(experiment.dataset(), batch_sampler=[ix.tolist() for ix in index_lists],
                        collate_fn=experiment.collate, num_workers=workers, pin_memory=pin_memory,
                        prefetch_factor=2 if workers else None, persistent_workers=False)
    yield from zip(batches, index_lists, loader, strict=True)


def compute_batches(experiment: Experiment, plan: Plan, batches: Sequence[int], commit: Callable[[int, Any], Any], *,
                    seed: int, device: str, workers: int = 0, progress: bool = True) -> None:
    """Compute ``batches`` one after another and hand each result to ``commit`` before the next one starts."""
    from advbench.progress import progress_bar

    total = sum(len(plan.batch_indices(b)) for b in batches)
    bar = progress_bar(total=total, desc="attacking", unit="sample", enabled=progress and total > 0)
    try:
        pin = torch.device(device).type == "cuda"
        for batch, indices, inputs in stream_batches(experiment, plan.batch_indices, batches, workers=workers,
                                                     pin_memory=pin):
            generator = batch_generator(seed, batch, device)
            result = compute_recording_warnings(experiment, batch, indices, inputs, generator)
            commit(batch, result)
            bar.update(len(indices))
    finally:
        bar.close()


def compute_recording_warnings(experiment: Experiment, batch: int, indices: Any, inputs: Any,
                               generator: torch.Generator) -> dict[str, Any]:
    """``experiment.compute``, with the Python warnings it raises recorded in the batch result's ``warnings``
    (once each) instead of printed: they reach the record, also from a Dask worker whose stderr nobody reads."""
    with warnings.catch_warnings(record=True) as caught:  # the process's filters still decide what counts
        result = experiment.compute(batch, indices, inputs, generator)
    listed = result.setdefault("warnings", [])
    for w in caught:
        entry = {"name": w.category.__name__, "message": str(w.message)}
        if entry not in listed:
            listed.append(entry)
    return result


def build_record(experiment: Experiment, info: PlanInfo, results: Sequence[dict[str, Any]], device: str) -> Record:
    """The record of a run from its plan and every batch's result, in batch order."""
    from advbench.records import code_version, device_name, now_iso, package_versions, run_name

    merged = experiment.merge(info.config, info.warnings, results)
    return Record(config=info.config, config_hash=info.config_hash, name=run_name(info.config),
                  code_version=code_version(), versions=package_versions(), device=device_name(device),
                  metrics=merged["metrics"], cost=merged["cost"], samples=merged["samples"], created_at=now_iso())


def _open_store(store: Any):
    from advbench.store import ResultsStore

    if store is None:
        return ResultsStore(":memory:"), True
    if isinstance(store, (str, Path)):
        return ResultsStore(store), True
    return store, False


def run(config: RunConfig, *, store: Any = None, force: bool = False, shard: tuple[int, int] = (1, 1),
        executor: str = "local", scheduler: str | None = None, workers: int | None = None,
        loader_workers: int | None = None, wandb: dict[str, Any] | None = None, progress: bool = True) -> Outcome:
    """Run ``config`` through the pipeline (see the module docstring).

    ``shard=(I, N)`` computes only shard ``I`` of ``N``; ``executor="dask"`` computes the batches on Dask
    workers (``scheduler``: an existing scheduler's address; else a local cluster of ``workers`` processes,
    one per GPU with dask-cuda when there are several GPUs).  ``store=None`` keeps the batches in memory.
    """
    if executor not in ("local", "dask"):
        raise ConfigError(f"--executor must be local or dask, got '{executor}'")
    if force and shard != (1, 1):
        raise ConfigError("--force reruns a whole run, so it cannot go with --shard (the other shards' batches "
                          "would be dropped); rerun without --shard, or drop --force to resume")
    if executor == "dask":
        from advbench.pipeline.dask_executor import run_on_dask

        if loader_workers:
            raise ConfigError("--loader-workers is for --executor local: each Dask worker reads its own batches "
                              "(spread the decoding over more workers with --workers)")

        db, owned = _open_store(store)
        try:
            return run_on_dask(config, db, force=force, shard=shard, scheduler=scheduler, workers=workers,
                               progress=progress, wandb=wandb)
        finally:
            if owned:
                db.close()
    name, experiment = make_experiment(config)
    plan = experiment.resolve()  # bad input fails here, before the store file is created
    info = PlanInfo.of(name, plan)
    db, owned = _open_store(store)
    try:
        outcome = stored_outcome(db, info, force)
        if outcome is not None:
            return outcome
        todo = pending_batches(db, info, shard, force)
        loader = default_loader_workers(config) if loader_workers is None else loader_workers
        compute_batches(experiment, plan, todo, lambda b, r: db.commit_batch(info.config_hash, b, r),
                        seed=config.seed, device=config.device, workers=loader, progress=progress)
        outcome = finish(db, experiment, info, config.device, force)
    finally:
        if owned:
            db.close()
    outcome.experiment = experiment
    if outcome.record is not None and not outcome.skipped:
        experiment.after_store(outcome.record, wandb)
    return outcome


def stored_outcome(db: Any, info: PlanInfo, force: bool) -> Outcome | None:
    seen = db.finished_run_id(info.config_hash)
    if seen is None or force:
        return None
    log.info("run %s is already in the store; skipped (pass --force to rerun)", info.config_hash[:12])
    return Outcome(Record.from_stored(db.get_run(seen)), True, info.n_batches, info.n_batches, info.config_hash)


def pending_batches(db: Any, info: PlanInfo, shard: tuple[int, int], force: bool) -> list[int]:
    """This shard's batches that are not committed yet (with ``force``, all of them: their old results go)."""
    mine = shard_batches(info.n_batches, *shard)
    if force:
        db.clear_batches(info.config_hash)
    done = db.committed_batches(info.config_hash)
    return [b for b in mine if b not in done]


def finish(db: Any, experiment: Experiment, info: PlanInfo, device: str, force: bool) -> Outcome:
    """Merge and store the record once every batch is committed; otherwise say how many are.

    Several shards can finish at once: the batches are read in one statement, and a run another process has
    merged meanwhile (its batches gone with the merge) is returned as stored, never reported as unfinished."""
    if not force:
        stored = stored_outcome(db, info, force=False)
        if stored is not None:
            return stored
    results = db.batch_results(info.config_hash)
    if len(results) < info.n_batches:
        stored = None if force else stored_outcome(db, info, force=False)
        if stored is not None:
            return stored
        missing = info.n_batches - len(results)
        log.info("run %s: %d of %d batches committed; run the other shards to finish it (%d missing)",
                 info.config_hash[:12], len(results), info.n_batches, missing)
        return Outcome(None, False, len(results), info.n_batches, info.config_hash)
    record = build_record(experiment, info, [results[b] for b in range(info.n_batches)], device)
    seen = db.finished_run_id(info.config_hash)
    saved = db.save_run(record.as_dict(), replaces=seen if force else None)
    if not saved.written:
        return Outcome(Record.from_stored(saved.existing), True, info.n_batches, info.n_batches, info.config_hash)
    record.id = saved.id
    return Outcome(record, False, info.n_batches, info.n_batches, info.config_hash)
