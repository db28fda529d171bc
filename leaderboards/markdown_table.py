"""Render leaderboard entries as Markdown: one table per dataset × threat model.

Rows are sorted by robust accuracy (at each model's largest eps) descending.  A compressed
checkpoint names its parent in the "Compressed from" column when the parent is on the same board.
"""

from __future__ import annotations

from collections.abc import Iterable

from advbench.leaderboards.layout import Board, boards, fmt_eps, fmt_pct, fmt_ratio, norm_label
from advbench.leaderboards.schema import LeaderboardEntry

COLUMNS = ("#", "Model", "Clean", "Robust", "ε", "Compressed from", "Attacks", "n", "Date", "Runs")


def _cell(text: str) -> str:
    """Escape a Markdown table cell (pipes, newlines)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _compressed_from(board: Board, entry: LeaderboardEntry) -> str:
    if entry.parent_sha256 is None:
        return ""
    ratio = fmt_ratio(entry.compression_ratio)
    parent = next((r.label for r in board.rows if r.entry.model_sha256 == entry.parent_sha256), None)
    return f"{parent or entry.parent_sha256[:12]} ({ratio})"


def render_board_markdown(board: Board) -> str:
    """One board as a Markdown section: heading, note and table."""
    lines = [
        f"## {_cell(board.title)}",
        "",
        f"Robust accuracy under {norm_label(board.norm)} attacks at each model's largest ε; "
        "at every ε the lowest accuracy over all stored runs counts (the strongest attack wins).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if c in ("#", "Clean", "Robust", "ε", "n") else "---" for c in COLUMNS) + "|",
    ]
    for row in board.ranked:
        entry = row.entry
        cells = [
            str(row.rank),
            _cell(row.label),
            fmt_pct(entry.clean_accuracy),
            fmt_pct(entry.robust_accuracy),
            fmt_eps(entry.eps),
            _cell(_compressed_from(board, entry)),
            _cell(", ".join(entry.attacks)),
            str(entry.n_samples),
            entry.date[:10],
            ", ".join(f"`{h[:12]}`" for h in entry.config_hashes),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(entries: Iterable[LeaderboardEntry]) -> str:
    """The whole leaderboard as Markdown (a pure function of ``entries``: same input, same text)."""
    sections = [render_board_markdown(board) for board in boards(entries)]
    if not sections:
        return "# Leaderboard\n\nNo entries.\n"
    return "# Leaderboard\n\n" + "\n".join(sections)


__all__ = ["render_board_markdown", "render_markdown"]
