"""The root ``advbench`` typer app and ``--version``; every command module registers on it."""

from __future__ import annotations

import typer

from advbench.cli.options import out

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Adversarial attacks and robustness benchmarks.")


def _print_version(value: bool) -> None:
    if value:
        from advbench import __version__
        from advbench.records import code_version

        out.print(f"advbench {__version__} ({code_version()})", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", metavar="", is_eager=True, callback=_print_version,
                                       help="print the version and exit")) -> None:
    """Adversarial attacks and robustness benchmarks."""
