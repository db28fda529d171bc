"""``advbench list``: every registered entry of one kind (see :mod:`advbench.listing`)."""

from __future__ import annotations

from enum import Enum

import typer
from rich.table import Table

from advbench.cli.app import app
from advbench.cli.options import out


class Listable(str, Enum):
    attacks = "attacks"
    models = "models"
    datasets = "datasets"
    defenses = "defenses"
    experiments = "experiments"
    structures = "structures"
    detectors = "detectors"
    patch_attacks = "patch-attacks"
    multitask_attacks = "multitask-attacks"


@app.command("list")
def list_cmd(what: Listable = typer.Argument(..., help="attacks, models, datasets, defenses, experiments or "
                                                      "structures (and the filters detectors, patch-attacks, "
                                                      "multitask-attacks)"),
             names_only: bool = typer.Option(False, "--names", help="one name per line, nothing else")) -> None:
    """List every registered entry of one kind, with the task it serves (generated from the registries)."""
    from advbench.listing import listing_rows

    rows = listing_rows(what.value)
    if names_only:
        for row in rows:
            out.print(row["name"], highlight=False, markup=False)
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = Table(*columns)
    for row in rows:
        table.add_row(*(row.get(col, "") for col in columns))
    out.print(table)
