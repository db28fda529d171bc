"""An inline SVG plot of robust accuracy vs eps for one (dataset, norm) section: axes, lines, legend.

One polyline per :class:`~advbench.leaderboards.layout.Series` (one model behind one defense under
one attack suite, on one sample set); it starts at eps = 0 with the clean accuracy (robust accuracy
under a zero budget).  Compressed checkpoints are drawn dashed.  Coordinates are rounded to two
decimals, so the output is a pure function of the section.
"""

from __future__ import annotations

from html import escape

from advbench.leaderboards.layout import Section, fmt_eps, fmt_ratio, norm_label

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
"""Line colours (matplotlib's tab10), assigned in rank order and reused past ten series."""

WIDTH, PLOT_HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 16, 46
LEGEND_LINE = 20
MAX_EPS_TICKS = 8


def _f(value: float) -> str:
    """A coordinate with two decimals, without a trailing ``.00``."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    return [top * i / (count - 1) for i in range(count)]


def colour(index: int) -> str:
    """The colour of the ``index``-th series (rank order)."""
    return PALETTE[index % len(PALETTE)]


def _accuracy_axis(y_of, plot_w: float) -> list[str]:
    """Grid lines and labels of the accuracy axis (0 to 100%)."""
    parts = []
    for acc in _nice_ticks(1.0):
        y = _f(y_of(acc))
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{LEFT + plot_w}" y2="{y}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y}" text-anchor="end" dominant-baseline="middle" '
                     f'font-size="11">{100 * acc:.0f}%</text>')
    return parts


def render_curve_svg(section: Section) -> str:
    """The robust-accuracy-vs-eps plot of ``section`` as an ``<svg>`` element (text)."""
    series = section.series
    eps_values = section.eps_values
    x_max = max(eps_values) if eps_values and max(eps_values) > 0 else 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, PLOT_HEIGHT - TOP - BOTTOM
    height = PLOT_HEIGHT + LEGEND_LINE * len(series) + 8

    def x_of(eps: float) -> float:
        return LEFT + plot_w * eps / x_max

    def y_of(acc: float) -> float:
        return TOP + plot_h * (1.0 - acc)

    title = f"Robust accuracy vs ε, {section.dataset}, {norm_label(section.norm)}"
    parts = [
        f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
        f'data-section="{escape(section.slug)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>',
    ]
    # y axis: accuracy 0..100%
    parts += _accuracy_axis(y_of, plot_w)
    # x axis: the eps values evaluated (or evenly spaced ticks when there are many)
    ticks = [0.0, *eps_values] if len(eps_values) < MAX_EPS_TICKS else _nice_ticks(x_max)
    for eps in sorted(set(ticks)):
        x = _f(x_of(eps))
        parts.append(f'<line class="grid" x1="{x}" y1="{TOP}" x2="{x}" y2="{TOP + plot_h}" stroke="#f0f0f0"/>')
        parts.append(f'<text x="{x}" y="{TOP + plot_h + 16}" text-anchor="middle" font-size="11">'
                     f"{escape(fmt_eps(eps))}</text>")
    parts.append(f'<text x="{_f(LEFT + plot_w / 2)}" y="{TOP + plot_h + 36}" text-anchor="middle" '
                 f'font-size="12">ε ({escape(norm_label(section.norm))})</text>')
    parts.append(f'<text x="14" y="{_f(TOP + plot_h / 2)}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {_f(TOP + plot_h / 2)})">robust accuracy</text>')
    # one polyline per series
    for line in series:
        first = line.entries[0]
        points = line.points
        coords = " ".join(f"{_f(x_of(e))},{_f(y_of(a))}" for e, a in points)
        dash = ' stroke-dasharray="6 4"' if line.is_compressed else ""
        stroke = colour(line.colour_index)
        parts.append(f'<g class="series" data-model="{escape(first.model)}" '
                     f'data-defense="{escape(first.defense_label)}" data-attacks="{escape(first.suite)}" '
                     f'data-sample-set="{escape(first.sample_set)}">')
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{stroke}" stroke-width="2"{dash}/>')
        for eps, acc in points:
            parts.append(f'<circle cx="{_f(x_of(eps))}" cy="{_f(y_of(acc))}" r="3" fill="{stroke}">'
                         f"<title>{escape(line.label)}: ε={escape(fmt_eps(eps))}, {100 * acc:.1f}%</title></circle>")
        parts.append("</g>")
    # legend below the plot
    for index, line in enumerate(series):
        y = PLOT_HEIGHT + LEGEND_LINE * index + 4
        dash = ' stroke-dasharray="6 4"' if line.is_compressed else ""
        note = ""
        if line.is_compressed:
            ratio = line.entries[0].compression_ratio
            note = " — compressed" + (f" {fmt_ratio(ratio)}" if ratio is not None else "")
        parts.append(
            f'<g class="legend-item" data-model="{escape(line.entries[0].model)}">'
            f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + 24}" y2="{y}" stroke="{colour(line.colour_index)}" '
            f'stroke-width="2"{dash}/>'
            f'<text x="{LEFT + 30}" y="{y}" dominant-baseline="middle" font-size="12">'
            f"{escape(line.label + note)}</text></g>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def pareto_points(section: Section) -> dict[str, list[tuple[float, float, str]]]:
    """Per compression family, ``(compression ratio, robust accuracy, label)`` at the section's largest eps; the
    dense parents of compressed entries are the family ``dense`` at 1x.  Empty without compressed entries."""
    if not section.boards:
        return {}
    board = section.boards[-1]
    compressed = [r for r in board.rows if r.entry.compression_ratio is not None]
    parents = {id(r.parent) for r in compressed if r.parent is not None}
    out: dict[str, list[tuple[float, float, str]]] = {}
    for row in board.rows:
        if row.entry.compression_ratio is not None:
            family = row.entry.compression_family or "compressed"
            out.setdefault(family, []).append((row.entry.compression_ratio, row.entry.robust_accuracy, row.label))
        elif id(row.entry) in parents:
            out.setdefault("dense", []).append((1.0, row.entry.robust_accuracy, row.label))
    return {family: sorted(points) for family, points in sorted(out.items())} if compressed else {}


def render_pareto_svg(section: Section) -> str:
    """Robust accuracy at the largest eps vs compression ratio (log scale) as an ``<svg>`` element: one series per
    compression family, the Pareto front (no point better in both) dashed.  ``""`` without compressed entries."""
    from math import log10

    families = pareto_points(section)
    if not families:
        return ""
    ratios = [p[0] for points in families.values() for p in points]
    lo, hi = log10(min(ratios)), log10(max(ratios))
    span = hi - lo or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, PLOT_HEIGHT - TOP - BOTTOM
    height = PLOT_HEIGHT + LEGEND_LINE * len(families) + 8

    def x_of(ratio: float) -> float:
        return LEFT + plot_w * (log10(ratio) - lo) / span

    def y_of(acc: float) -> float:
        return TOP + plot_h * (1.0 - acc)

    eps = section.boards[-1].eps
    title = f"Robust accuracy vs compression, {section.dataset}, {norm_label(section.norm)}, ε = {fmt_eps(eps)}"
    parts = [
        f'<svg class="pareto" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
        f'data-section="{escape(section.slug)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>',
    ]
    parts += _accuracy_axis(y_of, plot_w)
    for ratio in sorted(set(ratios)):
        x = _f(x_of(ratio))
        parts.append(f'<text x="{x}" y="{TOP + plot_h + 16}" text-anchor="middle" font-size="11">'
                     f"{escape(fmt_ratio(ratio))}</text>")
    parts.append(f'<text x="{_f(LEFT + plot_w / 2)}" y="{TOP + plot_h + 36}" text-anchor="middle" '
                 'font-size="12">compression ratio (log scale)</text>')
    front: list[tuple[float, float]] = []
    for ratio, acc in sorted(((p[0], p[1]) for points in families.values() for p in points),
                             key=lambda p: (-p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((ratio, acc))
    coords = " ".join(f"{_f(x_of(r))},{_f(y_of(a))}" for r, a in sorted(front))
    parts.append(f'<polyline class="front" points="{coords}" fill="none" stroke="#555" stroke-dasharray="4 4"/>')
    for index, (family, points) in enumerate(families.items()):
        stroke = colour(index)
        parts.append(f'<g class="family" data-family="{escape(family)}">')
        if len(points) > 1:
            line = " ".join(f"{_f(x_of(r))},{_f(y_of(a))}" for r, a, _ in points)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{stroke}" stroke-width="2"/>')
        for ratio, acc, label in points:
            parts.append(f'<circle cx="{_f(x_of(ratio))}" cy="{_f(y_of(acc))}" r="4" fill="{stroke}">'
                         f"<title>{escape(label)}: {escape(fmt_ratio(ratio))}, {100 * acc:.1f}%</title></circle>")
        parts.append("</g>")
        y = PLOT_HEIGHT + LEGEND_LINE * index + 4
        parts.append(f'<g class="legend-item"><circle cx="{LEFT + 12}" cy="{y}" r="4" fill="{stroke}"/>'
                     f'<text x="{LEFT + 30}" y="{y}" dominant-baseline="middle" font-size="12">'
                     f"{escape(family)}</text></g>")
    parts.append("</svg>")
    return "\n".join(parts)


__all__ = ["PALETTE", "colour", "pareto_points", "render_curve_svg", "render_pareto_svg"]
