"""Attack sweeps: every cell of a :class:`~advbench.sweep_spec.SweepSpec` evaluated once, on one machine or
on a Dask cluster, resumable, with one W&B run per cell.

* A cell is a pure function from a resolved config to a record (:func:`run_cell`); only the driver writes
  to the SQLite store, one transaction per record, as results arrive.  Killing the driver loses at most
  the cells in flight; rerunning skips every cell whose config hash is stored (``--force`` reruns), so a
  rerun *is* the resume.  Python warnings raised while a cell runs go into its record
  (``metrics["warnings"]``), never raw onto the terminal, on either executor.
* A failed cell is retried ``retries`` times (a lost Dask worker counts as a failure), then recorded as
  failed with its error, and the sweep goes on.  An advbench error (bad input, whose message says what to
  fix) is recorded at once: it would fail the same way again.
* ``executor="dask"`` starts a loopback-only ``LocalCluster`` (no dashboard) with single-threaded worker
  processes and ``cores / workers`` torch threads each, or connects to ``scheduler``; with no cell left to
  run it starts nothing.  At the end each worker process is given time to exit on its own before the
  cluster closes, all of it bounded by :data:`CLOSE_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any

from advbench.errors import AdvbenchError, ConfigError
from advbench.progress import progress_bar
from advbench.records import config_hash, now_iso, run_name
from advbench.runner import RunSpec
from advbench.sweep_spec import SweepSpec

log = logging.getLogger("advbench")


@dataclass
class Cell:
    index: int
    spec: RunSpec
    label: str
    config: dict[str, Any] | None = None
    config_hash: str | None = None
    error: str | None = None


@dataclass
class SweepSummary:
    total: int
    skipped: int = 0
    finished: int = 0
    failed: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def warned(self) -> int:
        """Cells run in this call whose record holds warnings (``advbench results show ID`` lists them)."""
        return sum(1 for r in self.records if (r.get("metrics") or {}).get("warnings"))


def build_cells(spec: SweepSpec) -> list[Cell]:
    """The sweep's cells as run specs (no model is loaded yet)."""
    cells = []
    for i, c in enumerate(spec.cells()):
        attack = c["attack"]
        run_spec = RunSpec(model=c["model"], dataset=c["dataset"], attacks=list(attack.cascade), eps=c["eps"],
                           norm=c["norm"], n_samples=spec.defaults.n_samples, seed=c["seed"],
                           batch_size=spec.defaults.batch_size, attack_params=attack.params,
                           device=spec.defaults.device)
        label = f"{os.path.basename(c['model'])} | {c['dataset']} | {attack.label} | {c['norm']} | seed {c['seed']}"
        cells.append(Cell(index=i, spec=run_spec, label=label))
    return cells


def resolve(cell: Cell) -> Cell:
    """Fill in the cell's resolved config and hash (loads the model's identity and the data split)."""
    from advbench.runner import prepare

    try:
        cell.config = prepare(cell.spec)[3]
    except Exception as err:  # recorded as a failed cell; the sweep goes on
        cell.error = f"{type(err).__name__}: {err}"
        spec = cell.spec
        cell.config = {"model": {"name": spec.model}, "dataset": spec.dataset, "norm": spec.norm,
                       "attacks": [{"name": a} for a in spec.attacks], "eps": spec.eps, "seed": spec.seed}
    cell.config_hash = config_hash(cell.config)
    return cell


def estimate_cost(cell: Cell) -> int:
    """A rough budget: samples × eps × the attacks' iterations (steps or queries) in the cascade."""
    from advbench import create_attack

    per_sample = 0
    for name in cell.spec.attacks:
        params = create_attack(name, norm=cell.spec.norm, eps=cell.spec.eps[0],
                               **cell.spec.attack_params.get(name, {})).hyperparameters()
        per_sample += int(params.get("steps") or params.get("n_queries") or 1)
    return per_sample * len(cell.spec.eps) * int(cell.spec.n_samples or 0)


def run_cell(spec: RunSpec, torch_threads: int | None = None) -> dict[str, Any]:
    """Evaluate one cell and return its record; writes nothing (the driver does).

    Python warnings raised meanwhile (a sanity warning, a library's) are recorded in the record's
    ``metrics["warnings"]`` as ``{name, message}``, once each, instead of printed: on a Dask worker a
    printed warning ends up on the driver's terminal as raw source lines through the progress bar.
    """
    import torch

    from advbench.evaluate import evaluate
    from advbench.runner import build_record, prepare

    with warnings.catch_warnings(record=True) as caught:  # the process's filters still decide what counts
        if torch_threads:
            torch.set_num_threads(torch_threads)
        model, x, y, config = prepare(spec)
        result = evaluate(model, x, y, attacks=spec.attacks, eps=spec.eps, norm=spec.norm,
                          attack_kwargs=spec.attack_params, batch_size=spec.batch_size, seed=spec.seed,
                          keep_examples=False)  # a record holds no images: no copies of the inputs per eps
    record = build_record(config, result, spec.device)
    listed = record.setdefault("metrics", {}).setdefault("warnings", [])
    for w in caught:
        entry = {"name": w.category.__name__, "message": str(w.message)}
        if entry not in listed:
            listed.append(entry)
    return record


@dataclass
class _Refused:
    """A cell that failed with an advbench error on a Dask worker: returned, not raised, so Dask does not
    retry it (it would fail the same way)."""

    error: str


def _run_cell_task(spec: RunSpec, torch_threads: int | None = None) -> dict[str, Any] | _Refused:
    try:
        return run_cell(spec, torch_threads)
    except AdvbenchError as err:
        return _Refused(f"{type(err).__name__}: {err}")


def failed_record(cell: Cell, error: str) -> dict[str, Any]:
    return {"config": cell.config, "config_hash": cell.config_hash, "name": run_name(cell.config), "status": "failed",
            "error": error, "metrics": {}, "cost": {}, "samples": [], "created_at": now_iso()}


def run_sweep(
    spec: SweepSpec,
    *,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    force: bool = False,
    retries: int = 2,
    progress: bool = True,
    wandb_mode: str | None = None,
) -> SweepSummary:
    """Run every cell not yet in the store; returns counts and the records written in this call."""
    from advbench.store import ResultsStore

    if executor not in ("local", "dask"):
        raise ConfigError(f"--executor must be local or dask, got '{executor}'")
    if retries < 0:
        raise ConfigError(f"--retries must be >= 0, got {retries}")
    cells = [resolve(c) for c in build_cells(spec)]
    summary = SweepSummary(total=len(cells))
    sink = _SweepTracker(spec, wandb_mode)
    with ResultsStore(spec.store) as store:
        todo = []
        seen: dict[str, int | None] = {}  # the stored finished run a forced cell replaces
        for cell in cells:
            seen[cell.config_hash] = store.finished_run_id(cell.config_hash) if cell.error is None else None
            if not force and seen[cell.config_hash] is not None:
                summary.skipped += 1
            elif cell.error is not None:
                _write(store, failed_record(cell, cell.error), summary, sink, None)
            else:
                todo.append(cell)
        bar = progress_bar(total=len(cells), desc=f"sweep {spec.name}", unit="cell", enabled=progress)
        bar.update(len(cells) - len(todo))
        if executor == "local" or not todo:  # nothing left to run starts no Dask cluster
            results = _run_local(todo, retries=retries)
        else:
            results = _run_dask(todo, scheduler=scheduler, workers=workers, retries=retries)
        with contextlib.closing(results):  # an interrupted sweep still shuts its cluster down
            for _cell, record in results:
                _write(store, record, summary, sink, seen.get(record.get("config_hash", "")))
                bar.update(1)
        bar.close()
    sink.finish(summary)
    return summary


def _write(store, record: dict[str, Any], summary: SweepSummary, sink, replaces: int | None) -> None:
    """Store one cell's record in one transaction; if another process stored the same config meanwhile, its
    record is the one that survives and is reported."""
    if record.get("status") == "failed":
        kept = store.finished_run_id(record.get("config_hash", ""))
        if kept is None:  # a failure never replaces a finished result (another sweep's, or a forced rerun's)
            record["id"] = store.write_run(record, force=True)
        else:
            record["id"] = None
            log.warning("cell %s failed; the finished run %d of the same config stays in the store",
                        record.get("name"), kept)
    else:
        saved = store.save_run(record, replaces=replaces)
        if not saved.written:
            record = saved.existing
        record["id"] = saved.id
    summary.records.append(record)
    if record.get("status") == "failed":
        summary.failed += 1
    else:
        summary.finished += 1
    sink.log_cell(record)


def _run_local(cells: list[Cell], *, retries: int):
    """Yield (cell, record) for each cell run in this process, each tried up to ``1 + retries`` times."""
    for cell in cells:
        for attempt in range(retries + 1):
            try:
                record = run_cell(cell.spec)
            except AdvbenchError as err:  # bad input: another try would fail the same way
                log.warning("cell %d (%s) failed: %s", cell.index, cell.label, err)
                record = failed_record(cell, f"{type(err).__name__}: {err}")
            except Exception as err:  # retried, then recorded, and the sweep goes on
                if attempt < retries:
                    log.warning("cell %d (%s) failed (%s: %s); retry %d of %d", cell.index, cell.label,
                                type(err).__name__, err, attempt + 1, retries)
                    continue
                log.warning("cell %d (%s) failed after %d attempt(s): %s", cell.index, cell.label, attempt + 1, err)
                record = failed_record(cell, f"{type(err).__name__}: {err} (after {attempt + 1} attempt(s))\n"
                                             f"{traceback.format_exc(limit=3)}")
            break
        yield cell, record


#: Seconds to wait for the Dask client, the worker processes and the local cluster to shut down.
CLOSE_TIMEOUT_S = 30


def _run_dask(cells: list[Cell], *, scheduler: str | None, workers: int | None, retries: int):
    """Yield (cell, record) as cells finish on a Dask cluster; failures become failed records."""
    from distributed import Client, LocalCluster, as_completed

    logging.getLogger("distributed").setLevel(logging.WARNING)  # progress is ours; keep Dask's chatter out
    cluster = client = None
    finished = False
    try:
        with warnings.catch_warnings(record=True) as caught:  # e.g. "Port 8787 is already in use": not ours
            if scheduler:
                client = Client(scheduler)
                threads = None
            else:
                import dask

                cores = os.cpu_count() or 1
                n_workers = workers or cores
                threads = max(1, cores // n_workers)
                # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in workers by default; with torch it makes every
                # allocation trim memory and halves the speed of a cell (measured: 13.5 s vs 6.5 s), so unset it.
                environ = {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                           "OPENBLAS_NUM_THREADS": threads}
                with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()}):
                    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None)
                client = Client(cluster)
        for w in caught:
            log.info("Dask: %s: %s", w.category.__name__, w.message)
        futures = {client.submit(_run_cell_task, c.spec, threads, key=f"cell-{c.index}-{c.config_hash[:12]}",
                                 pure=False, retries=retries): c for c in cells}
        for future in as_completed(futures):
            cell = futures.pop(future)
            try:
                result = future.result()
            except Exception as err:  # failed (or its worker lost) 1 + retries times
                result = _Refused(f"{type(err).__name__}: {err} (after {retries + 1} attempt(s))")
            if isinstance(result, _Refused):
                log.warning("cell %d (%s) failed: %s", cell.index, cell.label, result.error)
                result = failed_record(cell, result.error)
            yield cell, result
        finished = True
    finally:  # bounded: a cluster whose worker died mid-task must not hold the sweep open forever
        if client is not None:
            _close_within_bound(client)
        if cluster is not None:
            if finished:  # idle workers: let them exit on their own; an interrupted sweep closes at once
                _close_workers_within_bound(cluster)
            _close_within_bound(cluster)


def _close_workers_within_bound(cluster: Any) -> None:
    """Close the local cluster's workers, giving each worker process ``0.8 * CLOSE_TIMEOUT_S`` to exit.

    ``LocalCluster.close`` gives them 4 s, then kills them with "Worker process still alive after 4.0
    seconds, killing": an idle worker that has imported torch takes 2-4 s to tear its interpreter down, more
    on a busy machine.  A worker that has not exited by then is killed all the same, and a close that runs
    over is logged, not raised.
    """
    nannies = list(getattr(cluster, "workers", {}).values())

    async def close_all() -> None:
        await asyncio.gather(*(n.close(timeout=CLOSE_TIMEOUT_S) for n in nannies), return_exceptions=True)

    try:
        cluster.sync(close_all, callback_timeout=2 * CLOSE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - shutdown of a finished sweep must not fail it
        logging.getLogger("advbench.sweep").warning("Dask workers did not close cleanly: %s: %s",
                                                    type(err).__name__, err)


def _close_within_bound(closable: Any) -> None:
    """``closable.close(timeout=CLOSE_TIMEOUT_S)``; a shutdown that runs over is logged, not raised: every
    finished cell is already in the store, and the cluster still gets its own close call."""
    try:
        closable.close(timeout=CLOSE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - shutdown of a finished sweep must not fail it
        logging.getLogger("advbench.sweep").warning("Dask %s did not close cleanly: %s: %s",
                                                    type(closable).__name__, type(err).__name__, err)


class _SweepTracker:
    """One W&B run per cell, grouped by the sweep name, and a final summary run (driver side only)."""

    def __init__(self, spec: SweepSpec, mode: str | None) -> None:
        self.spec = spec
        self.options = None
        if spec.wandb is not None or mode is not None:
            from advbench.tracking import resolve_wandb_mode

            opts = spec.wandb or None
            resolved, message = resolve_wandb_mode(mode or (opts.mode if opts else None),
                                                   dir=os.path.dirname(spec.store))
            if message:
                log.warning(message)
            self.options = {"project": opts.project if opts else "advbench", "mode": resolved,
                            "group": (opts.group if opts and opts.group else spec.name),
                            "dir": os.path.dirname(spec.store)}

    def log_cell(self, record: dict[str, Any]) -> None:
        if self.options is None:
            return
        from advbench.tracking import WandbSink

        config = record.get("config") or {}
        tags = [str(config.get("model", {}).get("name")), str(config.get("norm")),
                *(a.get("name", "") for a in config.get("attacks", []))]
        with WandbSink(name=record.get("name"), config=config, tags=tags, **self.options) as sink:
            sink.log_record(record)

    def finish(self, summary: SweepSummary) -> None:
        if self.options is None or not summary.records:
            return
        from advbench.tracking import WandbSink

        with WandbSink(name=f"{self.spec.name}-summary", tags=["sweep-summary"], **self.options) as sink:
            sink.log_sweep_summary(summary.records)
