"""Render leaderboard entries as one static HTML page that works from the file system.

Everything is inline (CSS, a small vanilla-JS sorter, SVG plots); a Content-Security-Policy meta tag
forbids every external resource.  Per (dataset, norm) the page has one table per eps (the only
entries ranked against each other) and one robust-accuracy-vs-eps plot.  Each table row names the
entry's defense and attack suite.  Each *family* (a dense model and its compressed descendants,
behind the same defense, under the same suite) is one ``<tbody>``: the head row first, then the
children marked ``↳`` and indented.  Clicking a column header sorts the families by the head row's
value (numerically for numeric columns; first click descending for numbers, ascending for text; a
second click reverses), so children stay under their parent.

Rows carry stable data attributes for scripts and tests: ``data-model``, ``data-key`` (the entry id),
``data-sha256``, ``data-parent-sha256``, ``data-defense`` (``none`` or e.g. ``jpeg:quality=60``),
``data-attacks`` (``apgd-ce+square``), ``data-eps``, ``data-norm``, ``data-n-samples``,
``data-sample-set``, ``data-config-hash``, ``data-depth``, ``data-rank``, ``data-robust-accuracy``,
``data-clean-accuracy``; numeric cells carry ``data-value``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

from advbench.leaderboards.layout import Board, Row, Section, fmt_defense, fmt_eps, fmt_pct, fmt_ratio, sections
from advbench.leaderboards.markdown_table import board_note
from advbench.leaderboards.schema import LeaderboardEntry
from advbench.leaderboards.svg_plot import colour, render_curve_svg, render_pareto_svg

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


COLUMNS = (
    Column("rank", "#", "num", "rank by robust accuracy at this ε"),
    Column("model", "Model", "text"),
    Column("defense", "Defense", "text", "the defense in front of the model (BPDA: attacks used identity gradients)"),
    Column("attacks", "Attacks", "text", "the attack suite, in cascade order"),
    Column("clean_accuracy", "Clean", "num", "accuracy without attack, on the same samples"),
    Column("robust_accuracy", "Robust", "num", "accuracy under the attack suite at this ε"),
    Column("attack_success_rate", "ASR", "num", "broken / correctly classified samples"),
    Column("compression_ratio", "Compression", "num", "total / nonzero weights of a compressed checkpoint"),
    Column("n_samples", "n", "num", "evaluated samples (one sample set)"),
    Column("date", "Date", "text"),
    Column("run", "Run", None, "config hash of the stored run"),
)


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _num_cell(value: float | int | None, text: str) -> str:
    data = "" if value is None else repr(value)
    return f'<td class="num" data-value="{data}">{escape(text)}</td>'


def _model_cell(row: Row) -> str:
    entry = row.entry
    tip = [f"model: {entry.model}"]
    if entry.model_sha256:
        tip.append(f"sha256: {entry.model_sha256}")
    if entry.parent_sha256:
        tip.append(f"parent sha256: {entry.parent_sha256}")
    tip.append(f"sample set: {entry.sample_set}")
    tip.append(f"code: {entry.code_version or 'unknown'}")
    marker = ""
    style = ""
    if row.depth:
        marker = '<span class="marker">↳</span>'
        style = f' style="padding-left: {0.6 + 1.4 * row.depth:.1f}rem"'
    elif entry.is_compressed:
        tip.append("compressed; its parent is not on this board")
    return (f'<td class="model" data-value="{_attr(row.label)}" title="{_attr(chr(10).join(tip))}"{style}>'
            f'{marker}<span class="swatch" style="background: {colour(row.colour_index)}"></span>'
            f"{escape(row.label)}</td>")


def _defense_cell(entry: LeaderboardEntry) -> str:
    if entry.defense is None:
        return '<td class="defense" data-value="none"><span class="muted">none</span></td>'
    return f'<td class="defense" data-value="{_attr(entry.defense_label)}">{escape(fmt_defense(entry))}</td>'


def _row_html(row: Row) -> str:
    entry = row.entry
    cells = []
    for col in COLUMNS:
        if col.key == "rank":
            cells.append(_num_cell(row.rank, str(row.rank)))
        elif col.key == "model":
            cells.append(_model_cell(row))
        elif col.key == "defense":
            cells.append(_defense_cell(entry))
        elif col.key == "attacks":
            suite = escape(", ".join(entry.attacks))
            cells.append(f'<td class="attacks" data-value="{_attr(entry.suite)}">{suite}</td>')
        elif col.key in ("clean_accuracy", "robust_accuracy", "attack_success_rate"):
            value = getattr(entry, col.key)
            cells.append(_num_cell(value, fmt_pct(value)))
        elif col.key == "compression_ratio":
            text = fmt_ratio(entry.compression_ratio)
            if entry.compression_family:
                text = f"{text} · {entry.compression_family}"
            cells.append(_num_cell(entry.compression_ratio, text))
        elif col.key == "n_samples":
            cells.append(_num_cell(entry.n_samples, str(entry.n_samples)))
        elif col.key == "date":
            date = _attr(entry.date)
            cells.append(f'<td data-value="{date}" title="{date}">{escape(entry.date[:10])}</td>')
        else:  # run
            cells.append(f'<td class="runs"><code title="{_attr(entry.config_hash)}">'
                         f"{escape(entry.config_hash[:12])}</code></td>")
    attrs = {
        "class": "child" if row.depth else "head",
        "data-model": entry.model,
        "data-key": row.id,
        "data-sha256": entry.model_sha256 or "",
        "data-parent-sha256": entry.parent_sha256 or "",
        "data-defense": entry.defense_label,
        "data-attacks": entry.suite,
        "data-eps": entry.eps_text,
        "data-norm": entry.norm,
        "data-n-samples": entry.n_samples,
        "data-sample-set": entry.sample_set,
        "data-config-hash": entry.config_hash,
        "data-depth": row.depth,
        "data-rank": row.rank,
        "data-clean-accuracy": repr(entry.clean_accuracy),
        "data-robust-accuracy": repr(entry.robust_accuracy),
    }
    opening = "<tr " + " ".join(f'{k}="{_attr(v)}"' for k, v in attrs.items()) + ">"
    return opening + "".join(cells) + "</tr>"


def render_board_html(board: Board) -> str:
    """One board (dataset, norm, eps) as an HTML ``<section>``: heading, note and sortable table."""
    head_cells = []
    for col in COLUMNS:
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
        rows = "\n".join(_row_html(row) for row in family)
        bodies.append(f'<tbody class="family" data-head="{_attr(family[0].id)}" data-order="{order}">\n'
                      f"{rows}\n</tbody>")
    note = board_note(board) + " Click a column header to sort."
    if any(row.depth for row in board.rows):
        note += " Compressed checkpoints (↳) stay under their dense parent."
    return "\n".join([
        f'<section class="board" id="{_attr(board.slug)}" data-dataset="{_attr(board.dataset)}" '
        f'data-norm="{_attr(board.norm)}" data-eps="{_attr(fmt_eps(board.eps))}">',
        f"<h3>{escape(board.title)}</h3>",
        f'<p class="note">{escape(note)}</p>',
        '<div class="table-wrap">',
        f'<table class="leaderboard" id="table-{_attr(board.slug)}">',
        "<thead><tr>" + "".join(head_cells) + "</tr></thead>",
        *bodies,
        "</table>",
        "</div>",
        "</section>",
    ])


def render_section_html(section: Section) -> str:
    """One (dataset, norm) as an HTML ``<section>``: a table per eps, then the robust-accuracy-vs-eps plot."""
    return "\n".join([
        f'<section class="threat" id="{_attr(section.slug)}" data-dataset="{_attr(section.dataset)}" '
        f'data-norm="{_attr(section.norm)}">',
        f"<h2>{escape(section.title)}</h2>",
        *(render_board_html(board) for board in section.boards),
        "<figure>",
        render_curve_svg(section),
        "<figcaption>Robust accuracy vs ε (ε = 0 is clean accuracy): one line per model, defense, attack suite "
        "and sample set; dashed lines are compressed checkpoints.</figcaption>",
        "</figure>",
        *_pareto_figure(section),
        "</section>",
    ])


def _pareto_figure(section: Section) -> list[str]:
    svg = render_pareto_svg(section)
    if not svg:
        return []
    return ["<figure>", svg, "<figcaption>Robust accuracy at the largest ε vs compression ratio, one series per "
            "compression family (the dense parent at 1×); the dashed line is the Pareto front.</figcaption>",
            "</figure>"]


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def render_html(entries: Iterable[LeaderboardEntry], *, title: str = "advbench robustness leaderboard") -> str:
    """The whole leaderboard as one self-contained HTML page.

    A pure function: the same entries (in any order) give the identical string; the page shows no
    build time, only the newest run date of the entries.
    """
    entries = list(entries)
    section_list = sections(entries)
    n_boards = sum(len(s.boards) for s in section_list)
    latest = max((e.date for e in entries), default="")
    nav = "".join(
        f'<li><a href="#{_attr(s.slug)}">{escape(s.title)}</a>: '
        + ", ".join(f'<a href="#{_attr(b.slug)}">ε = {escape(fmt_eps(b.eps))}</a> ({len(b.rows)})' for b in s.boards)
        + "</li>"
        for s in section_list
    )
    summary = (f"{len(entries)} {_plural(len(entries), 'entry', 'entries')} in {n_boards} "
               f"{_plural(n_boards, 'table', 'tables')}; each table ranks one data set, norm and ε"
               + (f"; newest run {escape(latest)}" if latest else "") + ".")
    body = [render_section_html(s) for s in section_list] or ['<p class="muted">No entries.</p>']
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
        *body,
        "</main>",
        '<footer><p>Generated by advbench from leaderboard entry files; every number links back to its stored run by '
        "config hash (<code>advbench results show HASH</code>).</p></footer>",
        f"<script>{SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ])


__all__ = ["COLUMNS", "render_board_html", "render_html", "render_section_html"]
