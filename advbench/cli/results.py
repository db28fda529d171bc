"""``advbench results`` and ``advbench leaderboard``: read the results store."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from advbench.cli.app import app
from advbench.cli.options import DEFAULT_STORE, ExportFormat, err, out, print_run_table, renderer_for, require_store
from advbench.pipeline.tables import fmt as format_number

results_app = typer.Typer(no_args_is_help=True, help="Inspect and export the results store.")
app.add_typer(results_app, name="results")
leaderboard_app = typer.Typer(no_args_is_help=True, help="Build and render leaderboards from the results store.")
app.add_typer(leaderboard_app, name="leaderboard")


@results_app.command("list")
def results_list(store: Path = typer.Option(Path(DEFAULT_STORE), "--store")) -> None:
    """List the stored runs, newest first (name: model|data|attacks|norm|eps=...|defense)."""
    from advbench.records import format_eps
    from advbench.store import ResultsStore

    require_store(store)
    with ResultsStore(store) as db:
        rows = db.list_runs()
    table = Table("id", "hash", "name", "status", "created", "clean acc", "robust acc", "at eps")
    for row in rows:
        eps = row.get("eps")
        table.add_row(str(row["id"]), row["config_hash"][:12], str(row.get("run_name") or row.get("name")),
                      str(row.get("status")), str(row.get("created_at")), format_number(row.get("clean_accuracy")),
                      format_number(row.get("robust_accuracy")), "-" if eps is None else format_eps(eps))
    out.print(table)


@results_app.command("show")
def results_show(
    run_id: str = typer.Argument(..., help="run id or config-hash prefix"),
    store: Path = typer.Option(Path(DEFAULT_STORE), "--store"),
    as_json: bool = typer.Option(False, "--json", metavar=""),
) -> None:
    """Show one stored run."""
    from advbench.store import ResultsStore

    require_store(store)
    with ResultsStore(store) as db:
        record = db.get_record(int(run_id) if run_id.isdigit() else run_id)
    if as_json:
        sys.stdout.write(json.dumps(record.as_dict()) + "\n")
    elif record.status != "finished":  # a failed sweep cell: no metrics, the error says why
        out.print(f"run {record.id} ({record.config_hash[:12]}) {record.name or ''}: {record.status}",
                  highlight=False, markup=False)
        out.print(record.error or "(no error was recorded)", highlight=False, markup=False)
    elif record.experiment in ("classifier", "minmax"):
        print_run_table([record.as_dict()], title=f"run {record.id} ({record.config_hash[:12]})")
    else:
        out.print(renderer_for(record).render(record))


@results_app.command("export")
def results_export(
    fmt: ExportFormat = typer.Option(ExportFormat.csv, "--format"),
    output: Path | None = typer.Option(None, "--out", help="file to write (default: stdout)"),
    store: Path = typer.Option(Path(DEFAULT_STORE), "--store"),
) -> None:
    """Export every run as CSV (one row per run and eps; list values as JSON) or JSON (full records)."""
    from advbench.store import ResultsStore

    require_store(store)
    with ResultsStore(store) as db:
        text = db.export(fmt.value, output)
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        err.print(f"wrote {output}")


class RenderFormat(str, Enum):
    md = "md"
    html = "html"


@leaderboard_app.command("build")
def leaderboard_build(
    store: Path = typer.Option(Path(DEFAULT_STORE), "--store", help="results store to read"),
    out_dir: Path = typer.Option(..., "--out", help="directory for the entry JSON files"),
) -> None:
    """Write one validated JSON entry per (model, defense, attack suite, dataset, norm, eps) of the store."""
    from advbench.leaderboards import build_leaderboard

    require_store(store)
    paths = build_leaderboard(store, out_dir)
    for path in paths:
        sys.stdout.write(f"{path}\n")
    err.print(f"wrote {len(paths)} leaderboard entries to {out_dir}")


@leaderboard_app.command("render")
def leaderboard_render(
    entries_dir: Path = typer.Argument(..., help="directory of entry JSON files (from `advbench leaderboard build`)"),
    fmt: RenderFormat = typer.Option(RenderFormat.md, "--format", help="md: Markdown tables; html: one static page"),
    output: Path | None = typer.Option(None, "--out", help="file to write (default: stdout)"),
) -> None:
    """Render leaderboard entries as Markdown tables or one self-contained HTML page."""
    from advbench.io import atomic_write_text
    from advbench.leaderboards import load_entries, render

    text = render(load_entries(entries_dir), fmt.value)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(output, text)
        err.print(f"wrote {output}")
