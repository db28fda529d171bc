"""The sparsity structures of issue 21 (block, pattern, N:M) and the classic ones: every projection is checked
against a brute-force search over every member of the set on small tensors, and every structure check must fail
on a tampered weight."""

from __future__ import annotations

import itertools

import pytest
import torch

from advbench.compression import projections
from advbench.compression.projections import quantization_levels, quantize, scale_error
from advbench.compression.structures import STRUCTURES, create_structure, kept_count
from advbench.errors import ConfigError, UnknownNameError


def _distance(weight: torch.Tensor, mask: torch.Tensor) -> float:
    return float((weight - weight * mask).square().sum())


def _best(weight: torch.Tensor, masks) -> float:
    return min(_distance(weight, m) for m in masks)


def _subsets(n: int, k: int):
    for keep in itertools.combinations(range(n), k):
        mask = torch.zeros(n)
        mask[list(keep)] = 1
        yield mask


def _unstructured_members(weight, ratio):
    k = kept_count(weight.numel(), ratio)
    return [m.reshape(weight.shape) for m in _subsets(weight.numel(), k)]


def _filter_members(weight, ratio):
    k = kept_count(weight.shape[0], ratio)
    return [m.view(-1, *([1] * (weight.ndim - 1))).expand_as(weight) for m in _subsets(weight.shape[0], k)]


def _channel_members(weight, ratio):
    k = kept_count(weight.shape[1], ratio)
    return [m.view(1, -1, *([1] * (weight.ndim - 2))).expand_as(weight) for m in _subsets(weight.shape[1], k)]


def _block_members(weight, ratio, block_rows, block_cols):
    rows, cols = weight.shape
    tiles = [(r, c, min(block_rows, rows - r), min(block_cols, cols - c))
             for r in range(0, rows, block_rows) for c in range(0, cols, block_cols)]
    choices = [list(_subsets(w, kept_count(w, ratio))) for _, _, _, w in tiles]
    for pick in itertools.product(*choices):
        mask = torch.zeros(rows, cols)
        for (r, c, h, w), cols_kept in zip(tiles, pick, strict=True):
            mask[r:r + h, c:c + w] = cols_kept.expand(h, w)
        yield mask


def _nm_members(weight, n, m):
    rows, cols = weight.shape
    groups = [(g, min(m, cols - g)) for g in range(0, cols, m)]
    per_group = [[mask for k in range(0, min(n, size) + 1) for mask in _subsets(size, k)] for _, size in groups]
    per_row = [torch.cat(pick) for pick in itertools.product(*per_group)]
    for pick in itertools.product(per_row, repeat=rows):
        yield torch.stack(pick)


def _pattern_members(weight, ratio, library):
    kernels = weight.reshape(-1, 9).shape[0]
    k = kept_count(kernels, ratio)
    patterns = [torch.zeros(9).index_fill_(0, torch.tensor(p), 1) for p in library]
    for alive in itertools.combinations(range(kernels), k):
        for pick in itertools.product(patterns, repeat=k):
            mask = torch.zeros(kernels, 9)
            for i, p in zip(alive, pick, strict=True):
                mask[i] = p
            yield mask.reshape(weight.shape)


CASES = [
    ("unstructured", {}, (2, 4), 0.5, _unstructured_members),
    ("filter", {}, (4, 2, 2, 2), 0.5, _filter_members),
    ("channel", {}, (2, 4, 2, 2), 0.5, _channel_members),
    ("block", {"block_rows": 2, "block_cols": 3}, (4, 5), 0.4,
     lambda w, r: _block_members(w, r, 2, 3)),
    # rows pruned within each 3x2 tile: the column case of the transposed matrix, checked by the same brute force
    ("block-rows", {"block_rows": 3, "block_cols": 2, "prune": "rows"}, (5, 4), 0.4,
     lambda w, r: (m.t() for m in _block_members(w.t(), r, 2, 3))),
    ("nm", {"n": 2, "m": 4}, (2, 6), 0.0, lambda w, r: _nm_members(w, 2, 4)),
    ("pattern", {"library": ((0, 1, 3, 4), (1, 4, 5, 7), (3, 4, 5, 8))}, (2, 2, 3, 3), 0.5,
     lambda w, r: _pattern_members(w, r, ((0, 1, 3, 4), (1, 4, 5, 7), (3, 4, 5, 8)))),
]


@pytest.mark.parametrize(("name", "params", "shape", "ratio", "members"), CASES, ids=[c[0] for c in CASES])
def test_every_projection_is_the_nearest_member_of_its_set(name, params, shape, ratio, members) -> None:
    structure = create_structure(name.split("-")[0], **params)
    for seed in range(5):
        weight = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
        mask = structure.mask(weight, ratio)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        projected = structure.project(weight, ratio)
        assert structure.violations(projected, ratio) == [], "the projection must be a member of the set"
        brute = _best(weight, members(weight, ratio))
        assert _distance(weight, mask) == pytest.approx(brute, rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize(("name", "params", "shape", "ratio", "members"), CASES, ids=[c[0] for c in CASES])
def test_a_tampered_weight_fails_its_structure_check(name, params, shape, ratio, members) -> None:
    structure = create_structure(name.split("-")[0], **params)
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(11))
    projected = structure.project(weight, ratio)
    pruned = (projected == 0).nonzero()
    assert len(pruned), "the projection pruned nothing"
    tampered = projected.clone()
    tampered[tuple(pruned[0])] = 0.5  # one pruned weight brought back
    if name == "pattern":  # a kernel whose support is in no pattern: the centre row plus a corner
        tampered = projected.clone()
        tampered[0, 0] = torch.tensor([[1.0, 0, 1.0], [1.0, 1.0, 0], [0, 0, 0]])
    assert structure.violations(tampered, ratio), f"{name}: a tampered weight passed the structure check"


def test_nm_counts_every_group_and_pattern_learns_its_library() -> None:
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    two_four = create_structure("nm").project(weight, 0.0)
    assert int((two_four.reshape(8, 4, 4) != 0).sum(dim=2).max()) == 2
    assert create_structure("nm").effective_ratio(0.9) == 0.5
    # kernels that all keep the centre and the same three others: that pattern leads the library
    kernels = torch.full((6, 4, 3, 3), 0.01)
    kernels[..., 0, 1] = kernels[..., 1, 1] = kernels[..., 1, 2] = kernels[..., 2, 1] = 1.0
    learned = create_structure("pattern", library_size=2).prepared({"conv": kernels})
    assert learned.library[0] == (1, 4, 5, 7) and len(learned.library) == 1
    pruned = learned.project(torch.randn(6, 4, 3, 3), 0.5)
    assert learned.violations(pruned, 0.5) == [] and int((pruned.reshape(-1, 9) != 0).any(1).sum()) == 12


def test_bad_structures_get_clear_errors() -> None:
    with pytest.raises(UnknownNameError, match="known pruning structures: block, channel, filter, nested, nm, pattern"):
        create_structure("blk")
    with pytest.raises(ConfigError, match="has no parameter 'size'; its parameters are: block_rows, block_cols, prune"):
        create_structure("block", size=4)
    with pytest.raises(ConfigError, match="1 <= n < m"):
        create_structure("nm", n=4, m=4)
    with pytest.raises(ConfigError, match="3x3 kernels"):
        create_structure("pattern", library=((0, 1, 3, 4),)).mask(torch.randn(4, 4), 0.5)
    with pytest.raises(ConfigError, match="empty"):
        create_structure("pattern").mask(torch.randn(2, 2, 3, 3), 0.5)
    assert sorted(STRUCTURES.names()) == ["block", "channel", "filter", "nested", "nm", "pattern", "unstructured"]


def test_binary_quantization_is_the_exact_projection_onto_plus_minus_q() -> None:
    weight = torch.randn(40, generator=torch.Generator().manual_seed(3))
    weight[::5] = 0  # pruned weights stay pruned
    binary, q = quantize(weight, 1)
    assert torch.allclose(binary[weight != 0].abs(), torch.full_like(binary[weight != 0], q))
    assert bool((binary[weight == 0] == 0).all())
    grid = torch.linspace(0.01, 3, 3000)
    errors = [float((weight.sign() * s - weight).square().sum()) for s in grid]
    assert float((binary - weight).square().sum()) <= min(errors) + 1e-9


@pytest.mark.parametrize("bits", [2, 3])
def test_multi_bit_quantization_is_the_exact_projection(bits: int) -> None:
    """ADMM-NN's projection onto {±q, ±2q, ..., ±nq} (zeros stay zero), against brute force: for every assignment
    of levels to the non-zero weights the best scale is closed-form, and the least error over all of them is the
    projection's error.  A grid search over q (the old way) lands above it."""
    n = quantization_levels(bits)
    for seed in range(6):
        weight = torch.randn(7, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        weight[3] = 0
        quantized, q = quantize(weight, bits)
        a = weight[weight != 0].abs()
        brute = float("inf")
        for levels in itertools.product(range(1, n + 1), repeat=a.numel()):
            k = torch.tensor(levels, dtype=torch.float64)
            brute = min(brute, scale_error(a, float((a * k).sum() / k.square().sum()), n))
        error = float((quantized - weight).square().sum())
        assert error == pytest.approx(brute, rel=1e-9, abs=1e-12), f"seed {seed}"
        assert quantized[3] == 0 and bool((quantized[weight != 0] != 0).all())
        assert len(torch.unique(quantized[weight != 0].abs())) <= n
        assert error == pytest.approx(scale_error(a, q, n), rel=1e-9, abs=1e-12)


def test_quantization_scale_search_is_the_same_in_small_memory_windows(monkeypatch) -> None:
    """The sweep over change points holds a bounded number of them at once; the answer does not depend on it."""
    import advbench.compression.projections as projections

    weight = torch.randn(5000, generator=torch.Generator().manual_seed(4))
    for bits in (4, 8):
        whole = projections.best_scale(weight.abs(), quantization_levels(bits))
        monkeypatch.setattr(projections, "SWEEP_CHUNK", 6000)
        windowed = projections.best_scale(weight.abs(), quantization_levels(bits))
        monkeypatch.undo()
        assert windowed == pytest.approx(whole, rel=1e-12)
        grid = torch.linspace(float(weight.abs().max()) / 400, float(weight.abs().max()), 2000)
        n = quantization_levels(bits)
        assert scale_error(weight.abs().double(), whole, n) <= min(
            scale_error(weight.abs().double(), float(g), n) for g in grid) + 1e-9


def _exhaustive_least_error(a: torch.Tensor, n: int) -> float:
    """The least quantization error over every scale, by brute force on the change points: all N (n - 1) of them
    sorted, the level sums accumulated, and each interval's quadratic minimised (no bounds, no pruning)."""
    a = a.double()
    j = torch.arange(1, n, dtype=torch.float64).repeat(a.numel())
    owner = torch.arange(a.numel()).repeat_interleave(n - 1)
    u = (j + 0.5) / a[owner]
    order = torch.argsort(u)
    u, j, owner = u[order], j[order], owner[order]
    zero = torch.zeros(1, dtype=torch.float64)
    big_a = a.numel() + torch.cat([zero, (2 * j + 1).cumsum(0)])  # every level starts at 1 (q above them all)
    big_b = float(a.sum()) + torch.cat([zero, a[owner].cumsum(0)])
    q_high = torch.cat([torch.tensor([torch.inf], dtype=torch.float64), 1 / u])
    q_low = torch.cat([1 / u, zero])
    q = (big_b / big_a).clamp(min=q_low, max=q_high)
    return float((float(a.square().sum()) - 2 * big_b * q + big_a * q.square()).min())


@pytest.mark.parametrize("bits", [3, 4, 6, 8])
def test_quantization_scale_search_prunes_nothing_it_should_keep(bits: int) -> None:
    """The branch and bound behind best_scale against the exhaustive sweep of every change point, on weights shaped
    like real layers (normal, heavy-tailed, uniform), on ties (already quantized, or nearly), and at three sizes."""
    n = quantization_levels(bits)
    gen = torch.Generator().manual_seed(bits)
    for size in (50, 600, 2500):
        normal = torch.randn(size, generator=gen, dtype=torch.float64)
        cases = {
            "normal": normal * 0.02,
            "heavy-tailed": normal.abs() ** 3,
            "uniform": torch.rand(size, generator=gen, dtype=torch.float64),
            "quantized": (normal * 7).round() / 7,
            "nearly quantized": (normal * 7).round() / 7 + 1e-6 * torch.randn(size, generator=gen,
                                                                               dtype=torch.float64),
            "float32": (normal * 0.05).float(),
            # one weight 50 sigma out: the optimum clips it, far below top / n (found by review; the old search
            # started its bracket at top / (4 n^2 + 4) and missed it, up to 2x the least error)
            "outlier": torch.cat([normal[1:] * 0.02, torch.tensor([1.0], dtype=torch.float64)]),
            "cluster and outlier": torch.cat([torch.full((size,), 1e-3, dtype=torch.float64),
                                              torch.tensor([1.0], dtype=torch.float64)]),
        }
        for name, weight in cases.items():
            a = weight[weight != 0].abs()
            found = scale_error(a.double(), projections.best_scale(a, n), n)
            least = _exhaustive_least_error(a, n)
            assert found <= least + 1e-9 * least + 1e-12 * float(a.double().square().sum()), (name, size)


def test_nested_masks_are_each_levels_exact_projection_and_nested() -> None:
    from advbench.compression.nested import nested_masks, nested_violations

    levels = (0.25, 0.5, 0.75)
    for seed in range(4):
        weight = torch.randn(2, 4, generator=torch.Generator().manual_seed(seed))
        masks = nested_masks(weight, levels)
        for k, (mask, ratio) in enumerate(zip(masks, levels, strict=True)):
            brute = _best(weight, _unstructured_members(weight, ratio))
            assert _distance(weight, mask.float()) == pytest.approx(brute, abs=1e-9), f"level {k}"
            if k:
                assert not bool((mask & ~masks[k - 1]).any()), "a sparser level must be a subset of the denser"
        pruned = weight * masks[0]
        assert nested_violations({"w": pruned}, {"w": masks}, levels) == {}
        broken = [m.clone() for m in masks]
        broken[2][~masks[1]] = True  # level 2 keeps what level 1 pruned
        assert "not nested" in " ".join(nested_violations({"w": pruned}, {"w": broken}, levels)["w"])
    with pytest.raises(ConfigError, match="ascending"):
        nested_masks(torch.randn(4), (0.9, 0.5))
