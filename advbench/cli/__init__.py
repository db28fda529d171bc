"""The ``advbench`` console script: a thin typer layer over the library.

Human-readable tables go to stdout; progress bars and log messages go to stderr; with ``--json`` the only thing
on stdout is one JSON object.  Every user error ends in a one-line message and exit code 2.

One module per command group (``run``, ``sweep``, ``results``, ``data``, ``models``, ``sod``, ``multitask``,
``detection``, ``defense``, ``clouds``, ``demo``, ``listing``), the shared options in :mod:`advbench.cli.options`
and the root app in :mod:`advbench.cli.app`; :mod:`advbench.cli.main` registers them all.  Nothing outside this
package imports it, and no module in it imports :mod:`advbench.cli.main`.
"""

from advbench.cli.main import app, main

__all__ = ["app", "main"]
