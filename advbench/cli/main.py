"""The console script's entry point: registers every command group, turns errors into one line."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

import typer

from advbench.cli.app import app
from advbench.cli.options import INTERRUPTED, err
from advbench.errors import AdvbenchError
from advbench.sanity import SanityWarning

#: The command modules, in the order ``advbench --help`` lists their commands; importing one registers it.
COMMAND_MODULES = ("listing", "models", "run", "sweep", "results", "data", "demo", "clouds", "defense", "detection",
                   "multitask", "sod")
for _module in COMMAND_MODULES:
    importlib.import_module(f"advbench.cli.{_module}")


def main() -> None:
    """Entry point: run the app, turning advbench errors into one-line messages (exit code 2)."""
    logging.basicConfig(level=os.environ.get("ADVBENCH_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("ignore", SanityWarning)  # recorded in the run and printed once by the command itself
    try:
        code = app(standalone_mode=False)  # typer returns the exit code (130 after Ctrl-C) in this mode
    except AdvbenchError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print(INTERRUPTED)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print(INTERRUPTED)
        sys.exit(130)
    except Exception as exc:  # usage errors: typer raises its own copy of click's exceptions (public base class
        import click  # typer.TyperException), older typers click's own; only public names are used

        if isinstance(exc, (click.ClickException, typer.TyperException)) and hasattr(exc, "show"):
            exc.show()
            sys.exit(int(getattr(exc, "exit_code", 2)))
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise
    if code == 130:
        err.print(INTERRUPTED)
    if isinstance(code, int) and code:
        sys.exit(code)
