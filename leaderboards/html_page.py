"""Render leaderboard entries as one static HTML page that works from the file system.

Everything is inline (CSS, a small vanilla-JS sorter, SVG plots); a Content-Security-Policy meta tag
forbids every external resource.  Per (dataset, norm) the page has a table and a robust-accuracy-vs-eps
plot.  Each *family* (a dense model and its compressed descendants) is one ``<tbody>``: the head row
first, then the children marked ``↳`` and indented.  Clicking a column header sorts the families by
the head row's value (numerically for numeric columns; first click descending for numbers, ascending
for text; a second click reverses), so children stay under their parent.

Rows carry stable data attributes for scripts and tests: ``data-model``, ``data-key`` (sha256 or name),
``data-sha256``, ``data-parent-sha256``, ``data-depth``, ``data-rank``, ``data-robust-accuracy``,
``data-clean-accuracy``; numeric cells carry ``data-value``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

from advbench.leaderboards.layout import Board, Row, boards, fmt_eps, fmt_pct, fmt_ratio
from advbench.leaderboards.schema import LeaderboardEntry
from advbench.leaderboards.svg_plot import colour, render_curve_svg

MAX_EPS_COLUMNS = 8
"""A board with more distinct eps than this gets no per-eps columns (the plot still shows them)."""

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1400px; padding: 1rem 1.5rem; color: #222; }
h1 { margin-bottom: .25rem; }
nav ul { padding-left: 1.2rem; }
.note, figcaption, footer { color: #555; font-size: .9rem; }
.table-wrap { overflow-x: auto; }
table.leaderboard { border-collapse: collapse; font-size: .9rem; margin: .5rem 0 1rem; }
table.leaderboard th, table.leaderboard td { padding: .3rem .5rem; border-bottom: 1px solid #ddd; text-align: left;
       white-space: nowrap; }
table.leaderboard td.num, table.leaderboard th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.leaderboard th[data-type] { cursor: pointer; user-select: none; background: #f6f6f6; }
table.leaderboard th[data-type]:hover { background: #ececec; }
table.leaderboard th[aria-sort="ascending"]::after { content: " ▲"; font-size: .7em; }
table.leaderboard th[aria-sort="descending"]::after { content: " ▼"; font-size: .7em; }
table.leaderboard tbody.family { border-top: 2px solid #bbb; }
table.leaderboard tr.child td { background: #fafafa; }
table.leaderboard tr.child td.model { color: #333; }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-right: .4em;
          vertical-align: middle; }
.marker { color: #888; margin-right: .3em; }
.muted { color: #999; }
code { font-size: .85em; }
td.runs code { display: block; }
"""

SCRIPT = """
(function () {
  "use strict";
  function cellValue(row, col, type) {
    var cell = row.cells[col];
    if (!cell) { return null; }
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
    if (type === "num") {
      if (raw === "") { return null; }
      var v = parseFloat(raw);
      return isNaN(v) ? null : v;
    }
    return raw.toLowerCase();
  }
  function compare(a, b, type, dir) {
    if (a === null && b === null) { return 0; }
    if (a === null) { return 1; }  /* missing values always last */
    if (b === null) { return -1; }
    if (type === "num") { return dir * (a - b); }
    return dir * (a < b ? -1 : (a > b ? 1 : 0));
  }
  function sortBoard(table, th) {
    var col = th.cellIndex;
    var type = th.getAttribute("data-type");
    var state = th.getAttribute("aria-sort");
    var dir = state === "descending" ? 1 : (state === "ascending" ? -1 : (type === "num" ? -1 : 1));
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) {
      if (heads[i].hasAttribute("data-type")) { heads[i].setAttribute("aria-sort", "none"); }
    }
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var families = Array.prototype.slice.call(table.tBodies).map(function (body) {
      return { body: body, order: parseInt(body.getAttribute("data-order"), 10),
               value: cellValue(body.rows[0], col, type) };
    });
    families.sort(function (x, y) { return compare(x.value, y.value, type, dir) || (x.order - y.order); });
    families.forEach(function (f) { table.appendChild(f.body); });
  }
  var tables = document.querySelectorAll("table.leaderboard");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      if (!th.hasAttribute("data-type")) { return; }
      th.addEventListener("click", function () { sortBoard(table, th); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBoard(table, th); }
      });
    });
  });
})();
"""


@dataclass(frozen=True)
class Column:
    """A table column: sort key, header text, sort type (``num``/``text``; None: not sortable)."""

    key: str
    header: str
    type: str | None
    hint: str = ""


def _columns(board: Board) -> list[Column]:
    eps_values = board.eps_values
    cols = [
        Column("rank", "#", "num", "rank by robust accuracy"),
        Column("model", "Model", "text"),
        Column("clean_accuracy", "Clean", "num", "accuracy without attack"),
        Column("robust_accuracy", "Robust", "num", "robust accuracy at the model's largest ε"),
        Column("eps", "ε", "num", "largest ε evaluated"),
    ]
    if 1 < len(eps_values) <= MAX_EPS_COLUMNS:
        cols += [Column(f"eps:{fmt_eps(e)}", f"@ ε={fmt_eps(e)}", "num", f"robust accuracy at ε={fmt_eps(e)}")
                 for e in eps_values]
    cols += [
        Column("compression_ratio", "Compression", "num", "total / nonzero weights of a compressed checkpoint"),
        Column("attacks", "Attacks", "text"),
        Column("n_samples", "n", "num", "evaluated samples"),
        Column("date", "Date", "text"),
        Column("runs", "Runs", None, "config hashes of the stored runs"),
    ]
    return cols


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _num_cell(value: float | int | None, text: str) -> str:
    data = "" if value is None else repr(value)
    return f'<td class="num" data-value="{data}">{escape(text)}</td>'


def _model_cell(row: Row, index: int) -> str:
    entry = row.entry
    tip = [f"model: {entry.model}"]
    if entry.model_sha256:
        tip.append(f"sha256: {entry.model_sha256}")
    if entry.parent_sha256:
        tip.append(f"parent sha256: {entry.parent_sha256}")
    tip.append(f"code: {entry.code_version or 'unknown'}")
    marker = ""
    style = ""
    if row.depth:
        marker = '<span class="marker">↳</span>'
        style = f' style="padding-left: {0.6 + 1.4 * row.depth:.1f}rem"'
    elif entry.is_compressed:
        tip.append("compressed; its parent is not on this board")
    return (f'<td class="model" data-value="{_attr(row.label)}" title="{_attr(chr(10).join(tip))}"{style}>'
            f'{marker}<span class="swatch" style="background: {colour(index)}"></span>{escape(row.label)}</td>')


def _row_html(board: Board, row: Row, columns: list[Column], index: int) -> str:
    entry = row.entry
    by_eps = {p.eps: p.robust_accuracy for p in entry.curve}
    cells = []
    for col in columns:
        if col.key == "rank":
            cells.append(_num_cell(row.rank, str(row.rank)))
        elif col.key == "model":
            cells.append(_model_cell(row, index))
        elif col.key in ("clean_accuracy", "robust_accuracy"):
            value = getattr(entry, col.key)
            cells.append(_num_cell(value, fmt_pct(value)))
        elif col.key == "eps":
            cells.append(_num_cell(entry.eps, fmt_eps(entry.eps)))
        elif col.key.startswith("eps:"):
            eps = next(e for e in board.eps_values if fmt_eps(e) == col.key[4:])
            value = by_eps.get(eps)
            cells.append(_num_cell(value, fmt_pct(value)))
        elif col.key == "compression_ratio":
            cells.append(_num_cell(entry.compression_ratio, fmt_ratio(entry.compression_ratio)))
        elif col.key == "attacks":
            cells.append(f"<td>{escape(', '.join(entry.attacks))}</td>")
        elif col.key == "n_samples":
            cells.append(_num_cell(entry.n_samples, str(entry.n_samples)))
        elif col.key == "date":
            date = _attr(entry.date)
            cells.append(f'<td data-value="{date}" title="{date}">{escape(entry.date[:10])}</td>')
        else:  # runs
            hashes = " ".join(f'<code title="{_attr(h)}">{escape(h[:12])}</code>' for h in entry.config_hashes)
            cells.append(f'<td class="runs">{hashes}</td>')
    attrs = {
        "class": "child" if row.depth else "head",
        "data-model": entry.model,
        "data-key": entry.identity,
        "data-sha256": entry.model_sha256 or "",
        "data-parent-sha256": entry.parent_sha256 or "",
        "data-depth": row.depth,
        "data-rank": row.rank,
        "data-clean-accuracy": repr(entry.clean_accuracy),
        "data-robust-accuracy": repr(entry.robust_accuracy),
    }
    opening = "<tr " + " ".join(f'{k}="{_attr(v)}"' for k, v in attrs.items()) + ">"
    return opening + "".join(cells) + "</tr>"


def render_board_html(board: Board) -> str:
    """One board as an HTML ``<section>``: heading, sortable table and plot."""
    columns = _columns(board)
    color_index = {id(row): i for i, row in enumerate(board.ranked)}
    head_cells = []
    for col in columns:
        classes = ' class="num"' if col.type == "num" else ""
        title = f' title="{_attr(col.hint)}"' if col.hint else ""
        if col.type is None:
            head_cells.append(f'<th scope="col" data-key="{_attr(col.key)}"{classes}{title}>{escape(col.header)}</th>')
            continue
        state = "descending" if col.key == "robust_accuracy" else "none"
        head_cells.append(
            f'<th scope="col" data-key="{_attr(col.key)}" data-type="{col.type}" tabindex="0" '
            f'aria-sort="{state}"{classes}{title}>{escape(col.header)}</th>'
        )
    bodies = []
    for order, family in enumerate(board.families()):
        rows = "\n".join(_row_html(board, row, columns, color_index[id(row)]) for row in family)
        bodies.append(f'<tbody class="family" data-head="{_attr(family[0].entry.identity)}" data-order="{order}">\n'
                      f"{rows}\n</tbody>")
    n_children = sum(1 for row in board.rows if row.depth)
    note = ("Robust accuracy at each model's largest ε; at every ε the lowest accuracy over all stored runs counts "
            "(the strongest attack wins). Click a column header to sort.")
    if n_children:
        note += " Compressed checkpoints (↳) stay under their dense parent."
    return "\n".join([
        f'<section class="board" id="{_attr(board.slug)}" data-dataset="{_attr(board.dataset)}" '
        f'data-norm="{_attr(board.norm)}">',
        f"<h2>{escape(board.title)}</h2>",
        f'<p class="note">{escape(note)}</p>',
        '<div class="table-wrap">',
        f'<table class="leaderboard" id="table-{_attr(board.slug)}">',
        "<thead><tr>" + "".join(head_cells) + "</tr></thead>",
        *bodies,
        "</table>",
        "</div>",
        "<figure>",
        render_curve_svg(board),
        "<figcaption>Robust accuracy vs ε (ε = 0 is clean accuracy); dashed lines are compressed "
        "checkpoints.</figcaption>",
        "</figure>",
        "</section>",
    ])


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def render_html(entries: Iterable[LeaderboardEntry], *, title: str = "advbench robustness leaderboard") -> str:
    """The whole leaderboard as one self-contained HTML page.

    A pure function: the same entries (in any order) give the identical string; the page shows no
    build time, only the newest run date of the entries.
    """
    entries = list(entries)
    board_list = boards(entries)
    latest = max((e.date for e in entries), default="")
    nav = "".join(f'<li><a href="#{_attr(b.slug)}">{escape(b.title)}</a> ({len(b.rows)} models)</li>'
                  for b in board_list)
    summary = (f"{len(entries)} {_plural(len(entries), 'entry', 'entries')} in {len(board_list)} "
               f"{_plural(len(board_list), 'table', 'tables')}"
               + (f"; newest run {escape(latest)}" if latest else "") + ".")
    sections = [render_board_html(b) for b in board_list] or ['<p class="muted">No entries.</p>']
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="note">{summary}</p>',
        f"<nav><ul>{nav}</ul></nav>" if nav else "",
        "</header>",
        "<main>",
        *sections,
        "</main>",
        '<footer><p>Generated by advbench from leaderboard entry files; every number links back to stored runs by '
        "config hash (<code>advbench results show HASH</code>).</p></footer>",
        f"<script>{SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ])


__all__ = ["render_board_html", "render_html"]
