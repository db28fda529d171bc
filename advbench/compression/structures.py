"""Sparsity structures: the sets a pruned weight may lie in, their exact projections, and checks that read a
structure back from the tensors alone.

Each structure is registered in :data:`STRUCTURES` and built with :func:`create_structure`.  For a weight ``W``
and a pruning ratio it gives the 0/1 mask of the Euclidean projection of ``W`` onto its set (keep what holds
the most energy, :meth:`Structure.mask`), and :meth:`Structure.violations` lists, from a weight alone, where it
breaks the structure (a tampered checkpoint fails there).  Conv weights are read in GEMM form, ``(out,
in·kh·kw)``, as the papers do.

* ``unstructured`` (Zhang et al., ECCV 2018): keep the k largest-magnitude weights of a layer.
* ``filter`` (StructADMM, Zhang et al. 2018): keep the k rows (filters / output neurons) of largest l2 norm.
* ``channel``: keep the k input channels (columns) of largest l2 norm.
* ``block`` (BLK-REW, Ma et al., 2020; the block-structured transformer pruning of Li et al., 2020): the GEMM
  matrix is cut into ``block_rows x block_cols`` tiles and every tile keeps the same share of its columns:
  within a tile a column is kept or pruned for all the tile's rows.
* ``pattern`` (PatDNN, Ma et al., ASPLOS 2020): every kept 3x3 kernel keeps the weights of one pattern of a
  small library (``entries`` of the 9 positions, the centre always among them), and ``ratio`` of the kernels
  are removed whole (connectivity sparsity).  The library is the ``library_size`` most frequent patterns of the
  dense weights (:meth:`PatternStructure.prepared`).
* ``nm`` (N:M; the load-balanced gather-scatter patterns of Sun et al., 2021, whose best-known case is the
  2:4 sparsity that GPUs run): every group of ``m`` consecutive weights along a row of the GEMM matrix keeps
  at most ``n`` (a short last group too).

Every projection is exact: ties aside, no other weight tensor of the set is closer to ``W`` (the tests check
this against a brute-force search over every member of the set on small tensors).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import torch

from advbench.errors import ConfigError
from advbench.registry import Registry


def kept_count(total: int, ratio: float) -> int:
    """How many of ``total`` units survive pruning ``ratio`` of them (at least one)."""
    if not 0 <= ratio < 1:
        raise ConfigError(f"a pruning ratio must be in [0, 1), got {ratio}")
    return max(1, round((1 - ratio) * total))


def top_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest entries of a 1-D ``scores``."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[scores.topk(k).indices] = True
    return mask


def gemm(weight: torch.Tensor) -> torch.Tensor:
    """A weight in GEMM form: ``(out, in·kh·kw)`` for a conv, itself for a linear layer."""
    if weight.ndim < 2:
        raise ConfigError(f"structured pruning needs a 2-D or 4-D weight, got shape {tuple(weight.shape)}")
    return weight.reshape(weight.shape[0], -1)


@dataclass(frozen=True)
class Structure:
    """A sparsity set, parameterised; subclasses write :meth:`mask` and :meth:`violations`."""

    name: ClassVar[str] = ""

    def mask(self, weight: torch.Tensor, ratio: float) -> torch.Tensor:
        """The 0/1 mask (``weight``'s shape and dtype) of the projection of ``weight`` onto the set."""
        raise NotImplementedError

    def project(self, weight: torch.Tensor, ratio: float) -> torch.Tensor:
        """The exact Euclidean projection of ``weight`` onto the set."""
        return weight * self.mask(weight, ratio)

    def violations(self, weight: torch.Tensor, ratio: float) -> list[str]:
        """Where ``weight`` breaks the structure at ``ratio`` (empty when it is a member of the set)."""
        raise NotImplementedError

    def applies_to(self, weight: torch.Tensor) -> bool:
        """Whether the structure can prune a layer with this weight (others are left dense)."""
        return weight.ndim in (2, 4)

    def prepared(self, weights: Mapping[str, torch.Tensor]) -> Structure:
        """The structure with whatever it learns from the dense weights (a pattern library); itself by default."""
        return self

    def effective_ratio(self, ratio: float) -> float:
        """The share of a layer's weights the structure removes at ``ratio`` (N:M fixes its own)."""
        return ratio

    def parameters(self) -> dict[str, Any]:
        """The structure's parameters, JSON-ready, for checkpoint metadata (see :func:`create_structure`)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


#: Structure name -> class; :func:`create_structure` builds one from keyword parameters.
STRUCTURES: Registry[type[Structure]] = Registry("pruning structure")


def register_structure(name: str):
    """Class decorator: register a :class:`Structure` under ``name``."""

    def wrap(cls: type[Structure]) -> type[Structure]:
        cls.name = name
        STRUCTURES.add(name, cls)
        return cls

    return wrap


def create_structure(name: str | Structure, **params: Any) -> Structure:
    """Build the structure ``name`` with its parameters (unknown ones name the valid ones)."""
    if isinstance(name, Structure):
        return replace(name, **params) if params else name
    cls = STRUCTURES.get(name)
    valid = [f.name for f in fields(cls)]
    unknown = [k for k in params if k not in valid]
    if unknown:
        raise ConfigError(f"pruning structure '{name}' has no parameter {', '.join(map(repr, unknown))}; its "
                          f"parameters are: {', '.join(valid) or '(none)'}")
    return cls(**params)


def _count_violation(where: str, live: int, allowed: int) -> list[str]:
    return [f"{where}: {live} kept, at most {allowed} allowed"] if live > allowed else []


@register_structure("unstructured")
@dataclass(frozen=True)
class Unstructured(Structure):
    """Keep the k largest-magnitude weights (Zhang et al., ECCV 2018)."""

    def mask(self, weight: torch.Tensor, ratio: float) -> torch.Tensor:
        flat = top_mask(weight.detach().abs().flatten(), kept_count(weight.numel(), ratio))
        return flat.reshape(weight.shape).to(weight.dtype)

    def violations(self, weight: torch.Tensor, ratio: float) -> list[str]:
        return _count_violation("weights", int((weight != 0).sum()), kept_count(weight.numel(), ratio))


@register_structure("filter")
@dataclass(frozen=True)
class Filter(Structure):
    """Keep the k rows (filters, output neurons) of largest l2 norm (StructADMM)."""

    def mask(self, weight: torch.Tensor, ratio: float) -> torch.Tensor:
        rows = top_mask(gemm(weight.detach()).norm(dim=1), kept_count(weight.shape[0], ratio))
        return rows.view(-1, *([1] * (weight.ndim - 1))).expand_as(weight).to(weight.dtype)

    def violations(self, weight: torch.Tensor, ratio: float) -> list[str]:
        live = int((gemm(weight) != 0).any(dim=1).sum())
        return _count_violation("filters", live, kept_count(weight.shape[0], ratio))


@register_structure("channel")
@dataclass(frozen=True)
class Channel(Structure):
    """Keep the k input channels (columns) of largest l2 norm."""

    def mask(self, weight: torch.Tensor, ratio: float) -> torch.Tensor:
        if weight.ndim < 2:
            raise ConfigError(f"channel pruning needs a 2-D or 4-D weight, got shape {tuple(weight.shape)}")
        dims = [0] + list(range(2, weight.ndim))
        cols = top_mask(weight.detach().square().sum(dim=dims).sqrt(), kept_count(weight.shape[1], ratio))
        return cols.view(1, -1, *([1] * (weight.ndim - 2))).expand_as(weight).to(weight.dtype)

    def violations(self, weight: torch.Tensor, ratio: float) -> list[str]:
        live = int((weight != 0).any(dim=0).reshape(weight.shape[1], -1).any(dim=1).sum())
        return _count_violation("input channels", live, kept_count(weight.shape[1], ratio))


def _tiles(rows: int, cols: int, block_rows: int, block_cols: int):
    for r in range(0, rows, block_rows):
        for c in range(0, cols, block_cols):
            yield slice(r, min(r + block_rows, rows)), slice(c, min(c + block_cols, cols))


@register_structure("block")
@dataclass(frozen=True)
class Block(Structure):
    """BLK-REW block sparsity (Ma et al., 2020): the GEMM matrix (a conv's ``(out, in·kh·kw)``, a linear or
    transformer projection's weight) is cut into ``block_rows x block_cols`` tiles, and in every tile the same
    share of its columns (``prune="columns"``, the default) or of its rows (``prune="rows"``) is kept, each kept or
    pruned whole within its tile.  The block-structured pruning of transformer layers (Li et al., 2020) is the
    same set on the attention and feed-forward projections."""

    block_rows: int = 8
    block_cols: int = 8
    prune: str = "columns"

    def __post_init__(self) -> None:
        for key in ("block_rows", "block_cols"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"block structure: {key} must be a positive integer, got {value!r}")
        if self.prune not in ("columns", "rows"):
            raise ConfigError(f"block structure: prune must be 'columns' or 'rows', got {self.prune!r}")

    def _oriented(self, weight: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """The GEMM matrix with the pruned units as its columns, and the tile shape in that orientation."""
        matrix = gemm(weight)
        if self.prune == "rows":
            return matrix.t(), self.block_cols, self.block_rows
        return matrix, self.block_rows, self.block_cols

    def mask(self, weight: torch.Tensor, ratio: float) -> torch.Tensor:
        matrix, br, bc = self._oriented(weight.detach())
        rows, cols = matrix.shape
        padded = torch.nn.functional.pad(matrix, (0, (-cols) % bc, 0, (-rows) % br))
        tiles = padded.reshape(padded.shape[0] // br, br, padded.shape[1] // bc, bc)
        norms = tiles.square().sum(dim=1)  # (row tiles, column tiles, bc): each column's energy within its tile
        width = torch.full((norms.shape[1],), bc, device=matrix.device)
        if cols % bc:
            width[-1] = cols % bc
            norms[:, -1, cols % bc:] = -1  # padding is never kept
        keep_per_tile = torch.tensor([kept_count(int(w), ratio) for w in width.tolist()], device=matrix.device)
        rank = norms.argsort(dim=2, descending=True, stable=True).argsort(dim=2)
        keep = rank < keep_per_tile[None, :, None]  # (row tiles, column tiles, bc)
        mask = keep[:, None, :, :].expand(-1, br, -1, -1).reshape(padded.shape)[:rows, :cols]
        if self.prune == "rows":
            mask = mask.t()
        return mask.reshape(weight.shape).to(weight.dtype)

    def violations(self, weight: torch.Tensor, ratio: float) -> list[str]:
        matrix, br, bc = self._oriented(weight)
        unit = "rows" if self.prune == "rows" else "columns"
        out = []
        rows, cols = matrix.shape
        for rs, cs in _tiles(rows, cols, br, bc):
            tile = matrix[rs, cs]
            live = int((tile != 0).any(dim=0).sum())
            r, c = (cs, rs) if self.prune == "rows" else (rs, cs)
            out += _count_violation(f"block rows {r.start}-{r.stop - 1}, columns {c.start}-{c.stop - 1} "
                                    f"(live {unit})", live, kept_count(tile.shape[1], ratio))
        return out


@register_structure("nm")
@dataclass(frozen=True)
class NM(Structure):
    """N:M sparsity (Sun et al., 2021; 2:4 on GPUs): every ``m`` consecutive weights along a GEMM row keep at
    most ``n``.  The ratio is fixed by ``n`` and ``m`` (1 - n/m); a pruning target is not used."""

    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or isinstance(self.m, bool) or not isinstance(self.n, int) \
                or not isinstance(self.m, int) or not 1 <= self.n < self.m:
            raise ConfigError(f"nm structure needs integers 1 <= n < m (e.g. n=2, m=4), got n={self.n!r}, "
                              f"m={self.m!r}")

    def effective_ratio(self, ratio: float) -> float:
        return 1 - self.n / self.m

    def _groups(self, matrix: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(rows, groups, m)`` view with the short last group padded by zeros; the real row length."""
        cols = matrix.shape[1]
        pad = (-cols) % self.m
        padded = torch.nn.functional.pad(matrix, (0, pad))
        return padded.reshape(matrix.shape[0], -1, self.m), cols

    def mask(self, weight: torch.Tensor, ratio: float = 0.0) -> torch.Tensor:
        groups, cols = self._groups(gemm(weight.detach()).abs())
        # padding is -1 so it is never chosen over a real weight
        if cols % self.m:
            groups = groups.clone()
            groups[:, -1, cols % self.m:] = -1
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(2, groups.topk(self.n, dim=2).indices, True)
        keep = keep.reshape(groups.shape[0], -1)[:, :cols]
        return keep.reshape(weight.shape).to(weight.dtype)

    def violations(self, weight: torch.Tensor, ratio: float = 0.0) -> list[str]:
        groups, _ = self._groups((gemm(weight) != 0).to(torch.int64))
        counts = groups.sum(dim=2)
        bad = (counts > self.n).nonzero().tolist()
        return [f"row {r}, group {g} (weights {g * self.m}-{g * self.m + self.m - 1}): {int(counts[r, g])} "
                f"nonzero, at most {self.n} of {self.m} allowed" for r, g in bad[:10]] + (
            [f"... and {len(bad) - 10} more groups"] if len(bad) > 10 else [])


CENTRE = 4  # index of the centre of a flattened 3x3 kernel


@register_structure("pattern")
@dataclass(frozen=True)
class PatternStructure(Structure):
    """PatDNN (Ma et al., ASPLOS 2020): every kept 3x3 kernel keeps one pattern of ``library`` (``entries`` of
    its 9 positions); ``ratio`` of the kernels of a layer are removed whole (connectivity sparsity).

    ``library`` holds each pattern as the sorted positions (0-8, row-major) it keeps; an empty library is
    learned from the dense weights by :meth:`prepared`."""

    library_size: int = 8
    entries: int = 4
    library: tuple[tuple[int, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.entries, bool) or not isinstance(self.entries, int) or not 1 <= self.entries <= 9:
            raise ConfigError(f"pattern structure: entries must be an integer in [1, 9], got {self.entries!r}")
        if isinstance(self.library_size, bool) or not isinstance(self.library_size, int) or self.library_size < 1:
            raise ConfigError(f"pattern structure: library_size must be a positive integer, got {self.library_size!r}")
        library = tuple(tuple(sorted(int(i) for i in p)) for p in self.library)
        for p in library:
            if len(p) != self.entries or len(set(p)) != len(p) or not all(0 <= i < 9 for i in p):
                raise ConfigError(f"pattern {list(p)} must be {self.entries} distinct positions in 0-8")
        object.__setattr__(self, "library", library)

    def applies_to(self, weight: torch.Tensor) -> bool:
        return weight.ndim == 4 and tuple(weight.shape[2:]) == (3, 3)

    def _kernels(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.applies_to(weight):
            raise ConfigError(f"pattern pruning needs a conv weight with 3x3 kernels, got shape {tuple(weight.shape)}")
        return weight.reshape(-1, 9)

    def _pattern_masks(self, device: torch.device) -> torch.Tensor:
        if not self.library:
            raise ConfigError("the pattern library is empty: build it from the dense weights with prepared()")
        masks = torch.zeros(len(self.library), 9, dtype=torch.bool, device=device)
        for i, p in enumerate(self.library):
            masks[i, list(p)] = True
        return masks

    def prepared(self, weights: Mapping[str, torch.Tensor]) -> PatternStructure:
        """The structure with the ``library_size`` most frequent patterns of the dense 3x3 kernels: each kernel's
        pattern is the centre plus its ``entries - 1`` largest other weights (PatDNN's candidate patterns)."""
        if self.library:
            return self
        counts: Counter[tuple[int, ...]] = Counter()
        for weight in weights.values():
            if not self.applies_to(weight):
                continue
            kernels = weight.detach().reshape(-1, 9).abs().clone()
            kernels[:, CENTRE] = float("inf")
            top = kernels.topk(self.entries, dim=1).indices.sort(dim=1).values
            counts.update(tuple(row) for row in top.tolist())
        if not counts:
            raise ConfigError("pattern pruning found no conv layer with 3x3 kernels to learn a library from")
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return replace(self, library=tuple(p for p, _ in ranked[:self.library_size]))

    def mask(self, weight: torch.Tensor, ratio: float) -> torch.Tensor:
        kernels = self._kernels(weight.detach())
        patterns = self._pattern_masks(weight.device)
        energy = kernels.square() @ patterns.T.to(kernels.dtype)  # (kernels, patterns): energy each pattern keeps
        best_energy, best = energy.max(dim=1)
        kept = top_mask(best_energy, kept_count(kernels.shape[0], ratio))
        mask = patterns[best] & kept[:, None]
        return mask.reshape(weight.shape).to(weight.dtype)

    def violations(self, weight: torch.Tensor, ratio: float) -> list[str]:
        kernels = self._kernels(weight) != 0
        patterns = self._pattern_masks(weight.device)
        fits = ((kernels[:, None, :] & ~patterns[None]).sum(dim=2) == 0).any(dim=1)  # support inside a pattern
        out = [f"kernel {int(i)} (filter {int(i) // weight.shape[1]}, channel {int(i) % weight.shape[1]}) keeps "
               f"positions {kernels[i].nonzero().flatten().tolist()}, in no library pattern"
               for i in (~fits).nonzero().flatten()[:10]]
        live = int(kernels.any(dim=1).sum())
        return out + _count_violation("kernels", live, kept_count(kernels.shape[0], ratio))




@register_structure("nested")
@dataclass(frozen=True)
class Nested(Structure):
    """Multi-level nested sparsity (Qin et al., 2021): the weights are pruned to the densest of ``levels``
    (unstructured); the sparser levels are nested masks over them (:mod:`advbench.compression.nested`).  The
    ratio is the densest level's; a pruning target is not used."""

    levels: tuple[float, ...] = (0.5, 0.75, 0.9)

    def __post_init__(self) -> None:
        from advbench.compression.nested import check_levels

        object.__setattr__(self, "levels", check_levels(self.levels))

    def effective_ratio(self, ratio: float) -> float:
        return self.levels[0]

    def mask(self, weight: torch.Tensor, ratio: float = 0.0) -> torch.Tensor:
        return Unstructured().mask(weight, self.levels[0])

    def violations(self, weight: torch.Tensor, ratio: float = 0.0) -> list[str]:
        return Unstructured().violations(weight, self.levels[0])

def structure_from_metadata(entry: Mapping[str, Any]) -> Structure:
    """The structure a checkpoint's ``compression.family.structure`` names, with its recorded parameters."""
    params = {k: v for k, v in entry.items() if k != "name"}
    if "library" in params:
        params["library"] = tuple(tuple(p) for p in params["library"])
    if "levels" in params:
        params["levels"] = tuple(params["levels"])
    return create_structure(str(entry.get("name", "unstructured")), **params)


def verify_layers(weights: Mapping[str, torch.Tensor], structure: Structure,
                  ratios: Mapping[str, float]) -> dict[str, list[str]]:
    """Per layer of ``ratios``, where its weight breaks ``structure`` (layers that hold to it are left out)."""
    problems = {}
    for name, ratio in ratios.items():
        if name not in weights:
            problems[name] = [f"layer {name} is not in the checkpoint"]
            continue
        found = structure.violations(weights[name], ratio)
        if found:
            problems[name] = found
    return problems


def recognise_nm(weights: Mapping[str, torch.Tensor], n: int = 2, m: int = 4) -> list[str]:
    """The layers that are N:M sparse (``n`` of every ``m``, 2:4 by default) and actually pruned to it: a 2:4
    checkpoint made by another tool (PyTorch's semi-structured sparsity, a ``torch.nn.utils.prune`` mask) is
    recognised from its tensors alone."""
    structure = NM(n=n, m=m)
    out = []
    for name, weight in weights.items():
        if weight.ndim not in (2, 4):
            continue
        matrix = gemm(weight)
        if matrix.shape[1] < m or structure.violations(weight):
            continue
        if float((matrix == 0).float().mean()) >= structure.effective_ratio(0.0) - 1e-6:
            out.append(name)
    return out
