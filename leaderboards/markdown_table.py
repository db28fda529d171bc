"""Render leaderboard entries as Markdown: one table per dataset × threat model × eps.

Only the entries of one table are ranked against each other, by robust accuracy descending.  Each
row names its defense and attack suite; a compressed checkpoint names its parent in the
"Compressed from" column when the parent is on the same table.
"""

from __future__ import annotations

from collections.abc import Iterable

from advbench.leaderboards.layout import Board, Row, boards, fmt_defense, fmt_pct, fmt_ratio, norm_label
from advbench.leaderboards.schema import LeaderboardEntry

COLUMNS = ("#", "Model", "Defense", "Attacks", "Clean", "Robust", "n", "Compressed from", "Date", "Run")
_NUMERIC = ("#", "Clean", "Robust", "n")


def _cell(text: str) -> str:
    """Escape a Markdown table cell (pipes, newlines)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _compressed_from(board: Board, row: Row) -> str:
    entry = row.entry
    if entry.parent_sha256 is None:
        return ""
    ratio = fmt_ratio(entry.compression_ratio)
    if entry.compression_family:
        ratio = f"{ratio}, {entry.compression_family}"
    parent = next((r.label for r in board.rows if r.entry is row.parent), None)
    return f"{parent or entry.parent_sha256[:12]} ({ratio})"


def board_note(board: Board) -> str:
    """The sentence under a board's heading: what is ranked, and a warning when attack suites differ."""
    note = (f"Robust accuracy under {norm_label(board.norm)} attacks at ε = {board.rows[0].entry.eps_text}, "
            "ranked only against this table. An entry's clean and robust accuracy come from one run on one "
            "sample set of n samples.")
    if len(board.suites) > 1:
        note += (" The entries were attacked with different attack suites; a weaker suite overestimates "
                 "robustness, so compare entries with the same suite.")
    return note


def render_board_markdown(board: Board) -> str:
    """One board as a Markdown section: heading, note and table."""
    lines = [
        f"## {_cell(board.title)}",
        "",
        board_note(board),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if c in _NUMERIC else "---" for c in COLUMNS) + "|",
    ]
    for row in board.ranked:
        entry = row.entry
        cells = [
            str(row.rank),
            _cell(row.label),
            _cell(fmt_defense(entry)),
            _cell(", ".join(entry.attacks)),
            fmt_pct(entry.clean_accuracy),
            fmt_pct(entry.robust_accuracy),
            str(entry.n_samples),
            _cell(_compressed_from(board, row)),
            entry.date[:10],
            f"`{entry.config_hash[:12]}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(entries: Iterable[LeaderboardEntry]) -> str:
    """The whole leaderboard as Markdown (a pure function of ``entries``: same input, same text)."""
    sections = [render_board_markdown(board) for board in boards(entries)]
    if not sections:
        return "# Leaderboard\n\nNo entries.\n"
    return "# Leaderboard\n\n" + "\n".join(sections)


__all__ = ["board_note", "render_board_markdown", "render_markdown"]
