"""What the renderers share: entries split into tables, ranked, grouped into dense/compressed families.

* one :class:`Board` per (dataset, norm), in sorted order;
* ``ranked``: the entries by robust accuracy, descending (ties: clean accuracy, then name);
* ``families``: each dense model (or a compressed one whose parent is not on the board) with its
  compressed descendants right under it, depth first; families ordered like their heads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from advbench.leaderboards.schema import LeaderboardEntry
from advbench.leaderboards.storage import slugify

NORM_LABELS = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}


def norm_label(norm: str) -> str:
    """A display name of a norm: ``linf`` -> ``L∞``."""
    return NORM_LABELS.get(norm, norm)


def rank_key(entry: LeaderboardEntry) -> tuple[float, float, str, str]:
    """Sort key for robust accuracy descending, then clean accuracy descending, then name and identity."""
    return (-entry.robust_accuracy, -entry.clean_accuracy, entry.model, entry.identity)


def fmt_pct(value: float | None) -> str:
    """An accuracy as a percentage with one decimal (``0.8733`` -> ``87.3%``); ``—`` for None."""
    return "—" if value is None else f"{100 * value:.1f}%"


def fmt_eps(value: float) -> str:
    """An eps as short text (``0.05`` -> ``0.05``, ``8/255`` stays a decimal)."""
    return f"{value:.6g}"


def fmt_ratio(value: float | None) -> str:
    """A compression ratio (``5.0`` -> ``5.0×``); ``—`` for None."""
    return "—" if value is None else f"{value:.1f}×"


@dataclass(frozen=True)
class Row:
    """One entry as placed on a board."""

    entry: LeaderboardEntry
    rank: int
    label: str
    depth: int = 0
    parent: LeaderboardEntry | None = None


@dataclass
class Board:
    """The entries of one (dataset, norm) table."""

    dataset: str
    norm: str
    rows: list[Row] = field(default_factory=list)

    @property
    def slug(self) -> str:
        """An HTML id / anchor for the board."""
        return f"{slugify(self.dataset)}-{slugify(self.norm)}"

    @property
    def title(self) -> str:
        """``digits · L∞``."""
        return f"{self.dataset} · {norm_label(self.norm)}"

    @property
    def ranked(self) -> list[Row]:
        """Rows by rank (robust accuracy descending)."""
        return sorted(self.rows, key=lambda r: r.rank)

    @property
    def eps_values(self) -> list[float]:
        """Every eps on any curve of the board, ascending."""
        return sorted({p.eps for r in self.rows for p in r.entry.curve})

    def families(self) -> list[list[Row]]:
        """Families in rank order of their heads; in each, the head then its descendants depth first."""
        by_sha = {r.entry.model_sha256: r for r in self.rows if r.entry.model_sha256}
        children: dict[str, list[Row]] = {}
        heads = []
        for row in self.ranked:
            if row.parent is not None and row.parent.model_sha256 in by_sha:
                children.setdefault(row.parent.model_sha256, []).append(row)
            else:
                heads.append(row)
        families = []
        for head in heads:
            family: list[Row] = []
            stack = [head]
            while stack:
                row = stack.pop(0)
                family.append(row)
                stack[0:0] = children.get(row.entry.model_sha256 or "", [])
            families.append(family)
        placed = {id(r) for family in families for r in family}
        families += [[r] for r in self.ranked if id(r) not in placed]  # only a parent cycle leaves rows out
        return families


def _labels(entries: list[LeaderboardEntry]) -> dict[str, str]:
    """Display names: the model name, plus a short hash where two entries share a name."""
    counts = Counter(e.model for e in entries)
    return {e.identity: e.model if counts[e.model] == 1 else f"{e.model} ({e.identity[:8]})" for e in entries}


def _depths(entries: list[LeaderboardEntry]) -> dict[str, tuple[int, LeaderboardEntry | None]]:
    by_sha = {e.model_sha256: e for e in entries if e.model_sha256}
    out: dict[str, tuple[int, LeaderboardEntry | None]] = {}
    for entry in entries:
        depth, seen, cursor = 0, {entry.identity}, entry
        while cursor.parent_sha256 in by_sha and cursor.parent_sha256 not in seen:
            seen.add(cursor.parent_sha256)
            cursor = by_sha[cursor.parent_sha256]
            depth += 1
        parent = by_sha.get(entry.parent_sha256) if entry.parent_sha256 else None
        out[entry.identity] = (depth if parent is not None else 0, parent)
    return out


def boards(entries: Iterable[LeaderboardEntry]) -> list[Board]:
    """The entries split into one :class:`Board` per (dataset, norm), sorted by dataset then norm.

    A compressed entry is a child row when its ``parent_sha256`` is the ``model_sha256`` of another
    entry of the same board; otherwise it heads its own family.
    """
    grouped: dict[tuple[str, str], list[LeaderboardEntry]] = {}
    for entry in entries:
        grouped.setdefault((entry.dataset, entry.norm), []).append(entry)
    result = []
    for (dataset, norm), members in sorted(grouped.items()):
        members = sorted(members, key=rank_key)
        labels, depths = _labels(members), _depths(members)
        board = Board(dataset, norm)
        for rank, entry in enumerate(members, start=1):
            depth, parent = depths[entry.identity]
            board.rows.append(Row(entry, rank, labels[entry.identity], depth, parent))
        result.append(board)
    return result


__all__ = ["Board", "Row", "boards", "fmt_eps", "fmt_pct", "fmt_ratio", "norm_label", "rank_key"]
