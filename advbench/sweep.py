"""Attack sweeps: every cell of a :class:`~advbench.sweep_spec.SweepSpec` evaluated once, on one machine or
on a Dask cluster, resumable, with one W&B run per cell.

* A cell is a pure function from a resolved config to a record (:func:`run_cell`); only the driver writes
  to the SQLite store, one transaction per record, as results arrive.  Killing the driver loses at most
  the cells in flight; rerunning skips every cell whose config hash is stored (``--force`` reruns).
* ``executor="dask"`` starts a loopback-only ``LocalCluster`` (no dashboard) with single-threaded worker
  processes and ``cores / workers`` torch threads each, or connects to ``scheduler``.  A failed or lost
  cell is retried ``retries`` times, then recorded as failed with its error, and the sweep goes on.
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Any

from advbench.errors import ConfigError
from advbench.progress import progress_bar
from advbench.records import config_hash, now_iso
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
    """Evaluate one cell and return its record; writes nothing (the driver does)."""
    import torch

    from advbench.evaluate import evaluate
    from advbench.runner import build_record, prepare

    if torch_threads:
        torch.set_num_threads(torch_threads)
    model, x, y, config = prepare(spec)
    result = evaluate(model, x, y, attacks=spec.attacks, eps=spec.eps, norm=spec.norm,
                      attack_kwargs=spec.attack_params, batch_size=spec.batch_size, seed=spec.seed)
    return build_record(config, result, spec.device)


def failed_record(cell: Cell, error: str) -> dict[str, Any]:
    return {"config": cell.config, "config_hash": cell.config_hash, "name": cell.label, "status": "failed",
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
    cells = [resolve(c) for c in build_cells(spec)]
    summary = SweepSummary(total=len(cells))
    sink = _SweepTracker(spec, wandb_mode)
    with ResultsStore(spec.store) as store:
        todo = []
        for cell in cells:
            if not force and cell.error is None and store.has_run(cell.config_hash):
                summary.skipped += 1
            elif cell.error is not None:
                _write(store, failed_record(cell, cell.error), summary, sink)
            else:
                todo.append(cell)
        bar = progress_bar(total=len(cells), desc=f"sweep {spec.name}", unit="cell", enabled=progress)
        bar.update(len(cells) - len(todo))
        if executor == "local":
            for cell in todo:
                try:
                    record = run_cell(cell.spec)
                except Exception as err:  # recorded, and the sweep goes on
                    log.warning("cell %d (%s) failed: %s", cell.index, cell.label, err)
                    record = failed_record(cell, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}")
                _write(store, record, summary, sink)
                bar.update(1)
        else:
            for _cell, record in _run_dask(todo, scheduler=scheduler, workers=workers, retries=retries):
                _write(store, record, summary, sink)
                bar.update(1)
        bar.close()
    sink.finish(summary)
    return summary


def _write(store, record: dict[str, Any], summary: SweepSummary, sink) -> None:
    record["id"] = store.write_run(record, force=True)
    summary.records.append(record)
    if record.get("status") == "failed":
        summary.failed += 1
    else:
        summary.finished += 1
    sink.log_cell(record)


#: Seconds to wait for the Dask client and local cluster to shut down.
CLOSE_TIMEOUT_S = 30


def _run_dask(cells: list[Cell], *, scheduler: str | None, workers: int | None, retries: int):
    """Yield (cell, record) as cells finish on a Dask cluster; failures become failed records."""
    from distributed import Client, LocalCluster, as_completed

    logging.getLogger("distributed").setLevel(logging.WARNING)  # progress is ours; keep Dask's chatter out
    cluster = None
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
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None)
        client = Client(cluster)
    try:
        futures = {client.submit(run_cell, c.spec, threads, key=f"cell-{c.index}-{c.config_hash[:12]}", pure=False,
                                 retries=retries): c for c in cells}
        for future in as_completed(futures):
            cell = futures[future]
            try:
                yield cell, future.result()
            except Exception as err:
                yield cell, failed_record(cell, f"{type(err).__name__}: {err}")
    finally:  # bounded: a cluster whose worker died mid-task must not hold the sweep open forever
        _close_within_bound(client)
        if cluster is not None:
            _close_within_bound(cluster)


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

        rows = [r for r in summary.records if r.get("status") == "finished"]
        with WandbSink(name=f"{self.spec.name}-summary", tags=["sweep-summary"], **self.options) as sink:
            import wandb

            table = wandb.Table(columns=["cell", "model", "dataset", "norm", "eps", "robust_accuracy"],
                                data=[[r["name"], r["config"]["model"].get("name"), r["config"]["dataset"],
                                       r["config"]["norm"], p["eps"], p["robust_accuracy"]]
                                      for r in rows for p in _curve(r)])
            sink.log_metrics({"sweep_table": table})
            for model in sorted({r["config"]["model"].get("name") for r in rows}):
                mine = [p for r in rows if r["config"]["model"].get("name") == model for p in _curve(r)]
                xs = sorted({p["eps"] for p in mine})
                ys = [[min(p["robust_accuracy"] for p in mine if p["eps"] == e) for e in xs]]
                sink.log_metrics({f"robust_accuracy_vs_eps/{model}": wandb.plot.line_series(
                    xs=xs, ys=ys, keys=[model], title=f"{model}: robust accuracy vs eps", xname="eps")})


def _curve(record: dict[str, Any]) -> list[dict[str, Any]]:
    metrics = record.get("metrics") or {}
    if "curve" in metrics:
        return metrics["curve"]
    return [{"eps": metrics.get("eps"), "robust_accuracy": metrics.get("robust_accuracy")}]
