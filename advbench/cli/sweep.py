"""``advbench sweep``: a YAML grid of runs, locally or on Dask."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer
from rich.table import Table

from advbench.cli.app import app
from advbench.cli.options import Executor, WandbMode, err, out
from advbench.errors import ConfigError


@app.command()
def sweep(
    spec_path: Path = typer.Argument(..., help="the sweep spec (YAML)"),
    executor: Executor = typer.Option(Executor.local, "--executor"),
    scheduler: str | None = typer.Option(None, "--scheduler", help="tcp://HOST:PORT of a running Dask scheduler"),
    workers: int | None = typer.Option(None, "--workers", min=1,
                                       help="local Dask workers (default: one per core, or one per GPU)"),
    resume: bool = typer.Option(False, "--resume", hidden=True, metavar=""),
    force: bool = typer.Option(False, "--force", metavar="", help="rerun cells that are already stored"),
    retries: int = typer.Option(2, "--retries", min=0,
                                help="retries of a failed (or, on Dask, lost) cell before it is recorded failed"),
    list_only: bool = typer.Option(False, "--dry-run", metavar="", help="list the cells, their count and estimated "
                                   "cost (resolves each cell here: loads its model and lists its data)"),
    wandb_mode: WandbMode | None = typer.Option(None, "--wandb-mode"),
    as_json: bool = typer.Option(False, "--json", metavar=""),
) -> None:
    """Run every cell of a sweep spec (models × datasets × attacks × norms × seeds).

    Cells already in the store are skipped, so rerunning a killed or failed sweep resumes it: it runs
    exactly the cells that are missing or failed (--force reruns stored cells too). Warnings raised in a
    cell go into its record. Exits 1 when any cell failed (listed by `advbench results list`).
    """
    from advbench.sweep import dry_run, run_sweep
    from advbench.sweep_spec import load_sweep_spec

    if resume:
        raise ConfigError("sweep --resume was removed: a rerun always skips the cells already stored and runs the "
                          "rest; drop the flag (--force reruns stored cells)")
    spec = load_sweep_spec(spec_path)
    if list_only:
        cells = dry_run(spec)
        stored = [c for c in cells if c["status"] == "stored"]
        total = sum(c["cost"] for c in cells if c["status"] == "to run")
        table = Table("#", "cell", "eps", "budget", "status", title=f"sweep {spec.name}: {len(cells)} cells")
        for c in cells:
            table.add_row(str(c["index"]), c["label"], ",".join(f"{e:g}" for e in c["eps"]), f"{c['cost']:,}",
                          c["status"])
        if as_json:
            payload = {"cells": len(cells), "stored": len(stored), "estimated_iterations": total}
            sys.stdout.write(json.dumps(payload) + "\n")
            return
        out.print(table)
        out.print(f"{len(cells)} cells, {len(stored)} already stored; about {total:,} attack iterations "
                  "(samples × eps × steps/queries) left to run")
        return
    summary = run_sweep(spec, executor=executor.value, scheduler=scheduler, workers=workers, force=force,
                        retries=retries, wandb_mode=wandb_mode.value if wandb_mode else None)
    result = {"cells": summary.total, "skipped": summary.skipped, "finished": summary.finished,
              "failed": summary.failed, "warned": summary.warned, "store": spec.store}
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        warned = f" ({summary.warned} with warnings: `advbench results show`)" if summary.warned else ""
        out.print(f"sweep {spec.name}: {summary.total} cells, {summary.finished} run{warned}, {summary.skipped} "
                  f"already stored, {summary.failed} failed; store {spec.store}")
    if summary.failed:
        err.print(f"{summary.failed} of {summary.total} cells failed; see `advbench results list --store "
                  f"{shlex.quote(str(spec.store))}`", highlight=False, markup=False)
        raise typer.Exit(1)
