"""Leaderboards built from the results store: entry schema, build, render.

An entry is one model behind one defense (or none), under one attack suite, at one threat model
(norm and eps), with clean and robust accuracy from one run on one sample set.  Entries are ranked
only against entries of the same data set, norm and eps.

* :mod:`~advbench.leaderboards.schema`: :class:`LeaderboardEntry` and its identity;
* :mod:`~advbench.leaderboards.collect`: eligible runs -> one candidate per (run, eps) -> one entry
  per identity (largest sample set, then the strongest run);
* :mod:`~advbench.leaderboards.storage`: :func:`build_leaderboard` (store -> one JSON file per entry)
  and :func:`load_entries`;
* :mod:`~advbench.leaderboards.markdown_table` and :mod:`~advbench.leaderboards.html_page`:
  :func:`render_markdown` and :func:`render_html`, pure functions of the entries
  (:mod:`~advbench.leaderboards.svg_plot` draws the inline robust-accuracy-vs-eps plots).
"""

from __future__ import annotations

from advbench.leaderboards.collect import entries_from_runs
from advbench.leaderboards.html_page import render_html
from advbench.leaderboards.markdown_table import render_markdown
from advbench.leaderboards.schema import SCHEMA_VERSION, CurvePoint, DefenseInfo, LeaderboardEntry
from advbench.leaderboards.storage import build_leaderboard, entry_filename, entry_id, load_entries

RENDER_FORMATS = ("md", "html")


def render(entries: list[LeaderboardEntry], fmt: str) -> str:
    """Render ``entries`` as ``"md"`` (Markdown) or ``"html"`` (a self-contained page).

    Raises:
        ConfigError: ``fmt`` is neither.
    """
    from advbench.errors import ConfigError

    key = str(fmt).lower().strip()
    if key in ("md", "markdown"):
        return render_markdown(entries)
    if key == "html":
        return render_html(entries)
    raise ConfigError(f"unknown leaderboard format {fmt!r}; use one of {', '.join(RENDER_FORMATS)}")


__all__ = [
    "RENDER_FORMATS",
    "SCHEMA_VERSION",
    "CurvePoint",
    "DefenseInfo",
    "LeaderboardEntry",
    "build_leaderboard",
    "entries_from_runs",
    "entry_filename",
    "entry_id",
    "load_entries",
    "render",
    "render_html",
    "render_markdown",
]
