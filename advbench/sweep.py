"""Attack sweeps: every cell of a :class:`~advbench.sweep_spec.SweepSpec` evaluated once through the one
pipeline, on one machine or on a Dask cluster, resumable, with one W&B run per cell.

* Each cell is a :class:`~advbench.pipeline.config.RunConfig` (validated when the spec is loaded) run by
  :mod:`advbench.pipeline.engine`: streamed in batches, each batch committed to the store when it is done.
  Killing the driver loses at most the batches in flight; rerunning skips every cell whose record is stored
  and resumes the others at their first uncommitted batch (``--force`` reruns), so a rerun *is* the resume.
  Python warnings raised while a batch runs go into the record (``metrics["warnings"]``), never raw onto the
  terminal, on either executor.
* ``executor="dask"`` spreads the *batches* of every cell over the workers (the same shards as
  ``advbench run --executor dask``), so one big cell no longer serialises a sweep.  The driver never loads a
  model or reads data: workers resolve each cell and compute its batches; the driver commits them and merges
  a cell's record when its last batch is in.  A lost worker's batches are recomputed elsewhere and a batch
  that arrives twice is stored once.
* A failed cell is retried ``retries`` times (a lost Dask worker counts as a failure), then recorded as
  failed with its error, and the sweep goes on.  An advbench error (bad input, whose message says what to
  fix) is recorded at once: it would fail the same way again.
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Any

from advbench.errors import AdvbenchError, ConfigError
from advbench.pipeline.config import RunConfig
from advbench.pipeline.dask_executor import CLOSE_TIMEOUT_S, close_within_bound  # noqa: F401 - re-exported
from advbench.progress import progress_bar
from advbench.records import config_hash, now_iso, run_name
from advbench.sweep_spec import SweepSpec

log = logging.getLogger("advbench")


@dataclass
class Cell:
    """One cell: its run config (``None`` when the cell could not be configured) and a readable label."""

    index: int
    config: RunConfig | None
    label: str
    request: dict[str, Any]
    error: str | None = None

    @property
    def request_hash(self) -> str:
        """The hash a failed record of this cell is stored under (nothing resolved: the request's own)."""
        return config_hash(self.request)


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
    """The sweep's cells as run configs (no model is loaded, no data is read)."""
    cells = []
    for i, c in enumerate(spec.cells()):
        attack = c["attack"]
        request = {"model": {"name": c["model"]}, "dataset": c["dataset"], "norm": c["norm"],
                   "attacks": [{"name": a} for a in attack.cascade], "eps": c["eps"], "seed": c["seed"]}
        label = f"{os.path.basename(c['model'])} | {c['dataset']} | {attack.label} | {c['norm']} | seed {c['seed']}"
        try:
            config = RunConfig.build(models=[c["model"]], dataset=c["dataset"], attacks=list(attack.cascade),
                                     eps=c["eps"], norm=c["norm"], n_samples=spec.defaults.n_samples, seed=c["seed"],
                                     batch_size=spec.defaults.batch_size, attack_params=attack.params,
                                     device=spec.defaults.device, experiment="classifier")
            cells.append(Cell(i, config, label, request))
        except AdvbenchError as err:
            cells.append(Cell(i, None, label, request, f"{type(err).__name__}: {err}"))
    return cells


def estimate_cost(cell: Cell) -> int:
    """A rough budget: samples × eps × the attacks' iterations (steps or queries) in the cascade."""
    from advbench import create_attack

    config = cell.config
    if config is None:
        return 0
    per_sample = 0
    for name in config.attacks:
        params = create_attack(name, norm=config.norm, eps=config.eps[0], **config.params_for(name)).hyperparameters()
        per_sample += int(params.get("steps") or params.get("n_queries") or 1)
    return per_sample * len(config.eps) * int(config.n_samples or 0)


def dry_run(spec: SweepSpec) -> list[dict[str, Any]]:
    """Each cell's index, label, eps, estimated cost and status (stored / to run / error: ...), resolved in this
    process (a dry run loads each cell's model and lists its data to learn its hash)."""
    from pathlib import Path

    from advbench.pipeline.engine import PlanInfo, make_experiment
    from advbench.store import ResultsStore

    rows = []
    db = ResultsStore(spec.store) if Path(spec.store).exists() else None
    try:
        for cell in build_cells(spec):
            status, cost = ("error: " + cell.error) if cell.error else "to run", estimate_cost(cell)
            if cell.config is not None:
                try:
                    name, experiment = make_experiment(cell.config)
                    info = PlanInfo.of(name, experiment.resolve())
                    if db is not None and db.finished_run_id(info.config_hash) is not None:
                        status = "stored"
                except AdvbenchError as err:
                    status = f"error: {type(err).__name__}: {err}"
            rows.append({"index": cell.index, "label": cell.label, "eps": cell.request["eps"], "cost": cost,
                         "status": status})
    finally:
        if db is not None:
            db.close()
    return rows


def run_cell(config: RunConfig, store: Any, force: bool = False) -> Any:
    """Run one cell through the pipeline in this process (resuming its committed batches); returns the
    :class:`~advbench.pipeline.engine.Outcome`."""
    from advbench.pipeline.engine import run

    return run(config, store=store, force=force, progress=False)


def failed_record(config: dict[str, Any], digest: str, error: str) -> dict[str, Any]:
    return {"config": config, "config_hash": digest, "name": run_name(config), "status": "failed",
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
    cells = build_cells(spec)
    summary = SweepSummary(total=len(cells))
    sink = _SweepTracker(spec, wandb_mode)
    with ResultsStore(spec.store) as store:
        bar = progress_bar(total=len(cells), desc=f"sweep {spec.name}", unit="cell", enabled=progress)
        report = _Reporter(store, summary, sink, bar)
        todo = []
        for cell in cells:
            if cell.error is not None:
                report.failed(cell.request, cell.request_hash, cell.error)
            else:
                todo.append(cell)
        if executor == "local":
            _run_local(todo, report, retries=retries, force=force)
        elif todo:
            from advbench.sweep_dask import run_cells_on_dask

            run_cells_on_dask(todo, report, scheduler=scheduler, workers=workers, retries=retries, force=force)
        bar.close()
    sink.finish(summary)
    return summary


class _Reporter:
    """Counts each cell's outcome, stores failed records, and logs each new record to W&B (driver side)."""

    def __init__(self, store: Any, summary: SweepSummary, sink: Any, bar: Any) -> None:
        self.store, self.summary, self.sink, self.bar = store, summary, sink, bar

    def outcome(self, cell: Cell, outcome: Any) -> None:
        if outcome.record is None:  # batches missing (another writer cleared them): nothing to report as done
            self.failed(cell.request, cell.request_hash,
                        f"only {outcome.committed} of the run's {outcome.total} batches are committed; rerun the "
                        "sweep to compute the rest")
            return
        self.store.forget_failed(cell.request_hash)  # an earlier failure of this cell is superseded
        if outcome.skipped:
            self.summary.skipped += 1
        else:
            record = outcome.record.as_dict(samples=False)
            self.summary.finished += 1
            self.summary.records.append(record)
            self.sink.log_cell(record)
        self.bar.update(1)

    def failed(self, config: dict[str, Any], digest: str, error: str) -> None:
        """Record a failed cell; a failure never replaces a finished result of the same config."""
        record = failed_record(config, digest, error)
        if self.store.finished_run_id(digest) is None:
            record["id"] = self.store.write_run(record, force=True)
        else:
            record["id"] = None
            log.warning("cell %s failed; the finished run of the same config stays in the store", record["name"])
        self.summary.failed += 1
        self.summary.records.append(record)
        self.sink.log_cell(record)
        self.bar.update(1)


def _run_local(cells: list[Cell], report: _Reporter, *, retries: int, force: bool) -> None:
    """Run each cell in this process, each tried up to ``1 + retries`` times."""
    for cell in cells:
        for attempt in range(retries + 1):
            try:
                outcome = run_cell(cell.config, report.store, force)
            except AdvbenchError as err:  # bad input: another try would fail the same way
                log.warning("cell %d (%s) failed: %s", cell.index, cell.label, err)
                report.failed(cell.request, cell.request_hash, f"{type(err).__name__}: {err}")
            except Exception as err:  # retried, then recorded, and the sweep goes on
                if attempt < retries:
                    log.warning("cell %d (%s) failed (%s: %s); retry %d of %d", cell.index, cell.label,
                                type(err).__name__, err, attempt + 1, retries)
                    continue
                log.warning("cell %d (%s) failed after %d attempt(s): %s", cell.index, cell.label, attempt + 1, err)
                report.failed(cell.request, cell.request_hash,
                              f"{type(err).__name__}: {err} (after {attempt + 1} attempt(s))\n"
                              f"{traceback.format_exc(limit=3)}")
            else:
                report.outcome(cell, outcome)
            break


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
