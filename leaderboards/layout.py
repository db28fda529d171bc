"""What the renderers share: entries split into sections and boards, ranked, grouped into families.

* one :class:`Section` per (dataset, norm), in sorted order; it holds one :class:`Board` per eps and
  the :class:`Series` of its robust-accuracy-vs-eps plot;
* a board ranks only entries of one (dataset, norm, eps): by robust accuracy, descending (ties:
  clean accuracy, then name, defense and attack suite);
* ``families``: each dense model's row (or a compressed one whose parent is not on the board) with
  its compressed descendants right under it, depth first; a child belongs under the parent entry
  with the same defense and attack suite.  Families are ordered like their heads;
* a series joins the entries of one (model, defense, attack suite, sample set) over eps; it starts
  at eps = 0 with the clean accuracy of its smallest-eps entry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from advbench.leaderboards.schema import LeaderboardEntry
from advbench.leaderboards.storage import entry_id, slugify
from advbench.records import format_eps

NORM_LABELS = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}


def norm_label(norm: str) -> str:
    """A display name of a norm: ``linf`` -> ``L∞``."""
    return NORM_LABELS.get(norm, norm)


def rank_key(entry: LeaderboardEntry) -> tuple[float, float, str, str, str, str]:
    """Robust accuracy descending, then clean accuracy descending, then name, identity, defense, suite."""
    return (-entry.robust_accuracy, -entry.clean_accuracy, entry.model, entry.identity, entry.defense_key,
            entry.suite)


def fmt_pct(value: float | None) -> str:
    """An accuracy as a percentage with one decimal (``0.8733`` -> ``87.3%``); ``—`` for None."""
    return "—" if value is None else f"{100 * value:.1f}%"


def fmt_eps(value: float) -> str:
    """An eps as short text (``0.05`` -> ``0.05``, ``8/255`` stays a decimal)."""
    return format_eps(value)


def fmt_defense(entry: LeaderboardEntry) -> str:
    """The defense of an entry as shown in a table: ``none``, ``jpeg:quality=60 + BPDA``."""
    if entry.defense is None:
        return "none"
    return entry.defense_label + (" + BPDA" if entry.defense.bpda else "")


def fmt_ratio(value: float | None) -> str:
    """A compression ratio (``5.0`` -> ``5.0×``); ``—`` for None."""
    return "—" if value is None else f"{value:.1f}×"


@dataclass(frozen=True)
class Series:
    """One plotted line: the entries of one (model, defense, attack suite, sample set), by eps."""

    key: tuple[str, ...]
    label: str
    entries: tuple[LeaderboardEntry, ...]
    colour_index: int

    @property
    def points(self) -> list[tuple[float, float]]:
        """(eps, robust accuracy) from eps = 0 (the clean accuracy of the smallest-eps entry) upward."""
        points = [(e.eps, e.robust_accuracy) for e in self.entries]
        if points[0][0] > 0:
            points.insert(0, (0.0, self.entries[0].clean_accuracy))
        return points

    @property
    def is_compressed(self) -> bool:
        return self.entries[0].is_compressed


@dataclass(frozen=True)
class Row:
    """One entry as placed on a board."""

    entry: LeaderboardEntry
    rank: int
    label: str
    depth: int = 0
    parent: LeaderboardEntry | None = None
    colour_index: int = 0

    @property
    def id(self) -> str:
        """The entry's id (see :func:`~advbench.leaderboards.storage.entry_id`)."""
        return entry_id(self.entry)


@dataclass
class Board:
    """The entries of one (dataset, norm, eps) table: the only entries ranked against each other."""

    dataset: str
    norm: str
    eps: float
    rows: list[Row] = field(default_factory=list)

    @property
    def slug(self) -> str:
        """An HTML id / anchor for the board."""
        return f"{slugify(self.dataset)}-{slugify(self.norm)}-eps-{slugify(fmt_eps(self.eps))}"

    @property
    def title(self) -> str:
        """``digits · L∞ · ε = 0.1``."""
        return f"{self.dataset} · {norm_label(self.norm)} · ε = {fmt_eps(self.eps)}"

    @property
    def ranked(self) -> list[Row]:
        """Rows by rank (robust accuracy descending)."""
        return sorted(self.rows, key=lambda r: r.rank)

    @property
    def suites(self) -> list[str]:
        """The distinct attack suites of the board's entries."""
        return sorted({r.entry.suite for r in self.rows})

    def families(self) -> list[list[Row]]:
        """Families in rank order of their heads; in each, the head then its descendants depth first."""
        ids = {id(r.entry): r for r in self.rows}
        children: dict[int, list[Row]] = {}
        heads = []
        for row in self.ranked:
            if row.parent is not None and id(row.parent) in ids:
                children.setdefault(id(row.parent), []).append(row)
            else:
                heads.append(row)
        for rows in children.values():  # a parent's compressed children grouped by family, then by rank
            rows.sort(key=lambda r: (r.entry.compression_family or "", r.rank))
        families = []
        for head in heads:
            family: list[Row] = []
            stack = [head]
            while stack:
                row = stack.pop(0)
                family.append(row)
                stack[0:0] = children.get(id(row.entry), [])
            families.append(family)
        placed = {id(r) for family in families for r in family}
        families += [[r] for r in self.ranked if id(r) not in placed]  # only a parent cycle leaves rows out
        return families


@dataclass
class Section:
    """One (dataset, norm): its boards (one per eps, ascending) and its plotted series."""

    dataset: str
    norm: str
    boards: list[Board] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return f"{slugify(self.dataset)}-{slugify(self.norm)}"

    @property
    def title(self) -> str:
        """``digits · L∞``."""
        return f"{self.dataset} · {norm_label(self.norm)}"

    @property
    def eps_values(self) -> list[float]:
        """The eps of the section's boards, ascending."""
        return [b.eps for b in self.boards]


def _labels(entries: list[LeaderboardEntry]) -> dict[str, str]:
    """Display names by identity: the model name, plus a short hash where two models share a name."""
    names = {e.identity: e.model for e in entries}
    counts = Counter(names.values())
    return {ident: name if counts[name] == 1 else f"{name} ({ident[:8]})" for ident, name in names.items()}


def _parent(entry: LeaderboardEntry, members: list[LeaderboardEntry]) -> LeaderboardEntry | None:
    """The board entry of ``entry``'s dense parent behind the same defense and under the same suite."""
    if entry.parent_sha256 is None:
        return None
    return next((m for m in members if m.model_sha256 == entry.parent_sha256 and m.defense_key == entry.defense_key
                 and m.suite == entry.suite), None)


def _depth(entry: LeaderboardEntry, members: list[LeaderboardEntry]) -> int:
    depth, seen, cursor = 0, {id(entry)}, entry
    while True:
        parent = _parent(cursor, members)
        if parent is None or id(parent) in seen:
            return depth
        seen.add(id(parent))
        cursor, depth = parent, depth + 1


def _series_label(entry: LeaderboardEntry, labels: dict[str, str], several_sets: bool) -> str:
    text = f"{labels[entry.identity]} · {entry.defense_label if entry.defense else 'no defense'} · {entry.suite}"
    return f"{text} · n={entry.n_samples}" if several_sets else text


def sections(entries: Iterable[LeaderboardEntry]) -> list[Section]:
    """The entries split into one :class:`Section` per (dataset, norm), each with one board per eps."""
    grouped: dict[tuple[str, str], list[LeaderboardEntry]] = {}
    for entry in entries:
        grouped.setdefault((entry.dataset, entry.norm), []).append(entry)
    result = []
    for (dataset, norm), members in sorted(grouped.items()):
        labels = _labels(members)
        by_series: dict[tuple[str, ...], list[LeaderboardEntry]] = {}
        for entry in members:
            by_series.setdefault(entry.series_key, []).append(entry)
        sets_per_line = Counter(key[:5] for key in by_series)
        # colours in rank order of each series' best-placed entry at its largest eps
        order = sorted(by_series, key=lambda k: (rank_key(max(by_series[k], key=lambda e: e.eps)), k))
        series = [
            Series(key, _series_label(by_series[key][0], labels, sets_per_line[key[:5]] > 1),
                   tuple(sorted(by_series[key], key=lambda e: e.eps)), index)
            for index, key in enumerate(order)
        ]
        colour_of = {id(e): s.colour_index for s in series for e in s.entries}
        section = Section(dataset, norm, series=series)
        by_eps: dict[float, list[LeaderboardEntry]] = {}
        for entry in members:
            by_eps.setdefault(entry.eps, []).append(entry)
        for eps, on_board in sorted(by_eps.items()):
            on_board = sorted(on_board, key=rank_key)
            board = Board(dataset, norm, eps)
            for rank, entry in enumerate(on_board, start=1):
                parent = _parent(entry, on_board)
                board.rows.append(Row(entry, rank, labels[entry.identity], _depth(entry, on_board) if parent else 0,
                                      parent, colour_of[id(entry)]))
            section.boards.append(board)
        result.append(section)
    return result


def boards(entries: Iterable[LeaderboardEntry]) -> list[Board]:
    """Every board of :func:`sections`, in order (dataset, norm, eps)."""
    return [board for section in sections(entries) for board in section.boards]


__all__ = ["Board", "Row", "Section", "Series", "boards", "fmt_defense", "fmt_eps", "fmt_pct", "fmt_ratio",
           "norm_label", "rank_key", "sections"]
