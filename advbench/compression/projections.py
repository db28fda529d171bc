"""Euclidean projections onto sparsity and quantization sets (the ADMM Z-step).

* Sparsity: the structures of :mod:`advbench.compression.structures` (unstructured, filter, channel, block,
  pattern, N:M).
* Quantization (ADMM-NN, Ren et al., ASPLOS 2019): every non-zero weight goes to the nearest level of
  ``{i·q : i = ±1, …, ±n}`` with ``n = 2^(bits-1) - 1``; zeros stay zero.  The scale ``q`` is the exact
  minimiser of the squared error (:func:`best_scale`).  One bit is binary, ``±q`` with ``q`` the mean magnitude.

Each projection is exact: no other weight tensor of the set is closer to the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from advbench.compression.structures import Structure, create_structure
from advbench.errors import ConfigError


def sparsity_mask(weight: torch.Tensor, ratio: float, structure: str | Structure) -> torch.Tensor:
    """The 0/1 mask (shaped like ``weight``) of the projection onto the sparsity set of ``structure`` (a name of
    :data:`~advbench.compression.structures.STRUCTURES` with its default parameters, or a built structure)."""
    return create_structure(structure).mask(weight, ratio)


def project_sparse(weight: torch.Tensor, ratio: float, structure: str | Structure) -> torch.Tensor:
    """Exact projection of ``weight`` onto the set with ``ratio`` of its units (weights, filters, channels,
    block columns, kernels) set to zero."""
    return weight * sparsity_mask(weight, ratio, structure)


def quantization_levels(bits: int) -> int:
    """n for a ``bits``-bit symmetric code with a zero: levels ±1…±n times the scale (1 bit: ±1, binary)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ConfigError(f"quantization width must be a whole number of bits in [1, 16] (1: binary), got {bits}")
    return max(1, 2 ** (bits - 1) - 1)


def quantize_with_scale(weight: torch.Tensor, q: float, n: int) -> torch.Tensor:
    """Nearest level of ``{i·q : i = ±1..±n}`` for every non-zero weight; zeros stay zero."""
    index = (weight.abs() / q).round().clamp(1, n)
    return torch.where(weight == 0, torch.zeros_like(weight), weight.sign() * index * q)


#: At most this many change points (see :func:`best_scale`) are held in memory at once.
SWEEP_CHUNK = 4_000_000
#: At most this many thresholds are looked up in one batch (see :class:`_SortedMagnitudes`).
QUERY_CHUNK = 1_000_000
#: The scale intervals of the first pruning round (fewer for wide codes: each costs 2n look-ups), and at most how
#: many exact-sweep windows are left at the end.
FIRST_INTERVALS, SWEEP_WINDOWS = 1024, 64
#: Pruning rounds stop once about SWEEP_START change points are left, or before a round would look up more than
#: ROUND_QUERIES thresholds.
SWEEP_START, ROUND_QUERIES = 500_000, 16_000_000


def scale_error(a: torch.Tensor, q: float, n: int) -> float:
    """Squared error of quantizing the magnitudes ``a`` to the nearest of ``{q, 2q, ..., nq}``."""
    return float((a - q * (a / q).round().clamp(1, n)).square().sum())


def _bisect(predicate_ok: Callable[[float], bool], lo: float, hi: float, *, want_low: bool) -> float:
    """The boundary of a monotone predicate on ``[lo, hi]`` by bisection in log space, rounded outwards."""
    for _ in range(48):
        mid = (lo * hi) ** 0.5
        if predicate_ok(mid) == want_low:
            hi = mid
        else:
            lo = mid
    return lo if want_low else hi


def _prefix_sums(x: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """``[0, x0, x0 + x1, ...]`` (length N + 1), summed in blocks so the rounding error grows like
    ``block + N / block`` additions instead of ``N``."""
    pad = (-x.numel()) % block
    rows = torch.cat([x, x.new_zeros(pad)]).view(-1, block).cumsum(1)
    offsets = torch.cat([x.new_zeros(1), rows[:, -1].cumsum(0)[:-1]])
    return torch.cat([x.new_zeros(1), (rows + offsets[:, None]).flatten()[: x.numel()]])


class _SortedMagnitudes:
    """Sorted magnitudes with prefix sums: the sums of ``a`` and ``a^2`` over any range of values in O(log N)."""

    def __init__(self, magnitudes: torch.Tensor, n: int) -> None:
        # sorted in the weights' own dtype, then widened (the same values); numpy's sort is about 3x torch's on CPU
        self.a = torch.from_numpy(np.sort(magnitudes.numpy())).to(torch.float64)
        self.n, self.size = n, magnitudes.numel()
        self.s1, self.s2 = _prefix_sums(self.a), _prefix_sums(self.a.square())
        self.total, self.c = float(self.s1[-1]), float(self.s2[-1])
        self.k = torch.arange(1, n + 1, dtype=torch.float64)

    def below(self, t: float) -> tuple[int, float, float]:
        """Count, sum and sum of squares of the magnitudes below ``t``."""
        i = int(torch.searchsorted(self.a, torch.tensor([t], dtype=torch.float64)))
        return i, float(self.s1[i]), float(self.s2[i])

    def _level_quadratics(self, low_scale: torch.Tensor, high_scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``sum k^2``, ``sum a k`` and ``sum a^2`` over the magnitudes that sit at level ``k`` when level ``k``
        holds ``[(k - 1/2) low_scale, (k + 1/2) high_scale)`` (level 1 from 0, level n to infinity), for each
        row of scales; the thresholds are built :data:`QUERY_CHUNK` at a time."""
        out: list[tuple[torch.Tensor, ...]] = []
        rows = max(1, QUERY_CHUNK // self.n)
        for low_s, high_s in zip(low_scale.split(rows), high_scale.split(rows), strict=True):
            lower, upper = (self.k - 0.5)[None, :] * low_s[:, None], (self.k + 0.5)[None, :] * high_s[:, None]
            lower[:, 0], upper[:, -1] = 0.0, torch.inf
            i = torch.searchsorted(self.a, lower)
            j = torch.maximum(torch.searchsorted(self.a, upper), i)
            count = (j - i).to(torch.float64)
            out.append(((count * self.k.square()).sum(1), ((self.s1[j] - self.s1[i]) * self.k).sum(1),
                        (self.s2[j] - self.s2[i]).sum(1)))
        return tuple(torch.cat(parts) for parts in zip(*out, strict=True))

    def errors(self, q: torch.Tensor) -> torch.Tensor:
        """The squared quantization error at each scale ``q``: level ``k`` holds ``[(k - 1/2) q, (k + 1/2) q)``."""
        big_a, big_b, c = self._level_quadratics(q, q)
        return c - 2 * big_b * q + big_a * q.square()

    def floors(self, u_lo: torch.Tensor, u_hi: torch.Tensor) -> torch.Tensor:
        """A lower bound of the error over each interval ``1/q`` in ``[u_lo, u_hi]``: the weights whose level is
        the same at both ends keep it throughout (levels only grow with ``1/q``), so their error is one quadratic in
        ``q``, minimised in closed form; the weights that change level count as zero."""
        big_a, big_b, c = self._level_quadratics(1.0 / u_lo, 1.0 / u_hi)
        q = torch.where(big_a > 0, big_b / big_a.clamp(min=1e-300), 1.0 / u_hi).clamp(min=1.0 / u_hi, max=1.0 / u_lo)
        return c - 2 * big_b * q + big_a * q.square()


def _partition(mags: _SortedMagnitudes, u_a: float, u_b: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The indices of the sorted magnitudes that may change level for ``1/q`` in ``(u_a, u_b]`` (level boundary
    ``j`` moves over ``[(j + 1/2) / u_b, (j + 1/2) / u_a)``, taken a little wider so rounding cannot hide one),
    and the runs of the others as ``(starts, ends)``, split at every boundary so each keeps one level throughout.
    Costs O(n log N) plus the changing ones, not O(N)."""
    j = torch.arange(1, mags.n, dtype=torch.float64) + 0.5
    low = torch.searchsorted(mags.a, j / u_b * (1 - 1e-12))
    high = torch.searchsorted(mags.a, j / u_a * (1 + 1e-12))
    edges = torch.unique(torch.cat([torch.tensor([0, mags.size]), low, high]))
    starts, ends = edges[:-1], edges[1:]
    # a run is covered when some boundary's range opened at or before its start and closes after it
    covered = (torch.searchsorted(low.sort().values, starts, right=True)
               - torch.searchsorted(high.sort().values, starts, right=True)) > 0
    first, length = starts[covered], ends[covered] - starts[covered]
    index = torch.repeat_interleave(first - (torch.cumsum(length, 0) - length), length) + torch.arange(
        int(length.sum()))
    return index, starts[~covered], ends[~covered]


def _steady_sums(mags: _SortedMagnitudes, starts: torch.Tensor, ends: torch.Tensor, u: float) -> tuple[float, float]:
    """``sum k^2`` and ``sum a k`` at ``1/q = u`` over runs of magnitudes that share one level: read from each
    run's first element, summed through the prefix sums."""
    k = torch.floor(mags.a[starts] * u + 0.5).clamp(1, mags.n)
    return float((k.square() * (ends - starts)).sum()), float((k * (mags.s1[ends] - mags.s1[starts])).sum())


def _sweep(mags: _SortedMagnitudes, u_start: float, u_stop: float) -> tuple[float, float]:
    """The scale of least error over ``1/q`` in ``[u_start, u_stop]``, and that error: every change point of the
    window in order and the closed-form minimum between two of them (see :func:`best_scale`), in sub-windows of
    at most about :data:`SWEEP_CHUNK` change points.  Only the magnitudes that change level are visited one by
    one; the others enter through their prefix sums."""
    n, best_q, best_err = mags.n, 1.0 / u_start, float("inf")
    step = max(SWEEP_CHUNK - mags.size, SWEEP_CHUNK // 2) / mags.total
    u_a = u_start
    while u_a < u_stop:
        u_b = max(min(u_a + step, u_stop), math.nextafter(u_a, math.inf))  # a step below u_a's spacing still moves
        changing, starts, ends = _partition(mags, u_a, u_b)
        steady_a, steady_b = _steady_sums(mags, starts, ends, u_a)
        a = mags.a[changing]
        # the state at 1/q = u_a, then every change point in (u_a, u_b] in order
        k = torch.floor(a * u_a + 0.5).clamp(1, n)
        first = k.long()
        last = (torch.ceil(a * u_b - 0.5) - 1).clamp(max=n - 1).long()
        count = (last - first + 1).clamp(min=0)
        owner = torch.repeat_interleave(torch.arange(a.numel()), count)
        offset = torch.arange(int(count.sum())) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        j = (first[owner] + offset).to(torch.float64)
        u = (j + 0.5) / a[owner]
        order = torch.argsort(u)
        u, j, owner = u[order], j[order], owner[order]
        zero = torch.zeros(1, dtype=torch.float64)
        big_a = steady_a + float(k.square().sum()) + torch.cat([zero, ((j + 1).square() - j.square()).cumsum(0)])
        big_b = steady_b + float((a * k).sum()) + torch.cat([zero, a[owner].cumsum(0)])
        u_lo = torch.cat([torch.tensor([u_a], dtype=torch.float64), u])
        u_hi = torch.cat([u, torch.tensor([u_b], dtype=torch.float64)])
        q = (big_b / big_a).clamp(min=1.0 / u_hi, max=1.0 / u_lo)
        err = mags.c - 2 * big_b * q + big_a * q.square()
        m = int(err.argmin())
        if float(err[m]) < best_err:
            best_q, best_err = float(q[m]), float(err[m])
        u_a = u_b
    return best_q, best_err


def _windows(lo: torch.Tensor, hi: torch.Tensor, most: int) -> list[tuple[float, float]]:
    """Sorted intervals merged where they touch, then across the smallest gaps until at most ``most`` remain."""
    breaks = torch.nonzero(lo[1:] != hi[:-1]).flatten()
    if breaks.numel() >= most:
        gaps = lo[breaks + 1] - hi[breaks]
        breaks = breaks[gaps.topk(most - 1).indices].sort().values
    starts = torch.cat([torch.tensor([0]), breaks + 1])
    ends = torch.cat([breaks, torch.tensor([lo.numel() - 1])])
    return list(zip(lo[starts].tolist(), hi[ends].tolist(), strict=True))


def best_scale(magnitudes: torch.Tensor, n: int) -> float:
    """The scale ``q > 0`` minimising ``E(q) = sum_i (a_i - q k_i)^2`` with ``k_i = clamp(round(a_i / q), 1, n)``
    over the non-zero magnitudes ``a``: the squared error of quantizing them to ``{q, 2q, ..., nq}``.

    Exact.  The assignment ``k`` only changes where ``a_i / q`` crosses a half-integer, at ``u = 1/q = (j + 1/2) /
    a_i`` (``j = 1..n-1``); between two such change points ``E`` is the quadratic ``C - 2 B q + A q^2`` with
    ``A = sum k^2`` and ``B = sum a k`` fixed, smallest at ``B / A`` clipped to the interval.  Sorting the change
    points and accumulating ``A`` and ``B`` gives every interval's minimum; the least of them is the global one.

    A layer at 8 bits has tens of millions of change points, so only the scales that can still hold the optimum
    are swept (branch and bound):

    1. With the magnitudes sorted and prefix-summed, ``E`` at any scale takes ``2n`` binary searches.  The optimum
       lies in ``[a_min / n, top]``: below, every magnitude is at level n and ``E`` falls as ``q`` grows; above,
       all are at level 1 and it grows.  The best of a few hundred scales there, ``E_0``, bounds the optimum, and
       so do ``sum_{a_i > n q} (a_i - n q)^2 <= E_0`` (clipping) and ``sum_{a_i < q} (q - a_i)^2 <= E_0``.
    2. Between those bounds, each interval of ``u`` gets a lower bound of ``E`` (:meth:`_SortedMagnitudes.floors`);
       the intervals whose bound exceeds ``E_0`` are dropped, the rest split and bounded again.
    3. What is left is swept exactly, in float64 and in windows of at most about :data:`SWEEP_CHUNK` change
       points.  The answer is chosen by direct evaluation; prefix sums only prune, with a margin for rounding.

    One level (``n = 1``, binary) is the mean magnitude.
    """
    flat = magnitudes.detach().flatten().cpu()
    if flat.dtype not in (torch.float16, torch.float32, torch.float64):
        flat = flat.float()  # bfloat16 (numpy has no such type) widens exactly
    a = flat.to(torch.float64)
    if a.numel() == 0:
        return 0.0
    if n == 1:
        return float(a.mean())
    mags = _SortedMagnitudes(flat, n)
    top = float(mags.a[-1])
    # Below a_min / n every magnitude sits at level n and each (a - n q)^2 falls as q grows, so the optimum is at
    # least a_min / n: a proven floor (top / (4 n^2 + 4) is not one; an outlier can put the optimum below it).
    # Above top every magnitude sits at level 1 and the error grows with q, so 4 top + 1 is a proven ceiling.
    floor_q = max(float(mags.a[0]) / n, math.ulp(0.0))
    low_end, high_end = (max(v, math.ulp(0.0)) for v in (min(floor_q, top / (4 * n * n + 4)), 2 * top / n))
    coarse = torch.logspace(math.log10(low_end), math.log10(high_end), 160, dtype=torch.float64)
    step = math.log10(float(coarse[1] / coarse[0]))
    near = float(coarse[int(mags.errors(coarse).argmin())]) * torch.logspace(-step, step, 256, dtype=torch.float64)
    errors = mags.errors(near)
    best_q, best_err = float(near[int(errors.argmin())]), float(errors.min())
    bound = best_err + 1e-9 * best_err + 1e-11 * mags.c  # prefix sums round to about 1e-13 C

    def above_ok(q: float) -> bool:  # sum_{a > nq} (a - nq)^2 <= bound
        i, s1, s2 = mags.below(n * q)
        return (mags.c - s2) - 2 * n * q * (mags.total - s1) + (n * q) ** 2 * (mags.size - i) <= bound

    def below_ok(q: float) -> bool:  # sum_{a < q} (q - a)^2 <= bound
        i, s1, s2 = mags.below(q)
        return q * q * i - 2 * q * s1 + s2 <= bound

    q_low = _bisect(above_ok, min(floor_q, best_q), best_q, want_low=True)
    q_high = _bisect(below_ok, best_q, 4 * top + 1.0, want_low=False)
    first = min(FIRST_INTERVALS, max(16, ROUND_QUERIES // (16 * n)))
    edges = torch.linspace(1.0 / q_high, 1.0 / q_low, first + 1, dtype=torch.float64)
    lo, hi = edges[:-1], edges[1:]
    for _ in range(8):
        keep = mags.floors(lo, hi) <= bound
        lo, hi = lo[keep], hi[keep]
        changes = mags.total * float((hi - lo).sum())  # about that many change points remain
        queries = 8 * lo.numel() * 2 * n  # the next round's look-ups
        if changes <= SWEEP_START or queries > min(changes, ROUND_QUERIES) or lo.numel() == 0:
            break  # sweeping what is left costs less than bounding it further
        split = lo[:, None] + (hi - lo)[:, None] * (torch.arange(9, dtype=torch.float64) / 8)
        split[:, -1] = hi  # the parent's edges stay exact, so neighbours still touch
        lo, hi = split[:, :-1].flatten(), split[:, 1:].flatten()
    windows = _windows(lo, hi, SWEEP_WINDOWS) if lo.numel() else []
    swept = [_sweep(mags, u_a, u_b) for u_a, u_b in windows]
    least = min([best_err, *(err for _, err in swept)])
    # the sweeps' errors use prefix sums too, so every scale within the margin of the least is evaluated directly
    candidates = [best_q] + [q for q, err in swept if err <= least + (bound - best_err)]
    return min(candidates, key=lambda q: scale_error(a, q, n))


def quantize(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, float]:
    """ADMM-NN quantization projection: returns the quantized weight and the chosen scale ``q``
    (:func:`best_scale`, exact).

    One bit is the binary code ``±q`` of the fully binarized networks of progressive ADMM (Ye et al., 2019): its
    best scale is exactly the mean magnitude of the non-zero weights."""
    n = quantization_levels(bits)
    nonzero = weight[weight != 0]
    if nonzero.numel() == 0:
        return weight.clone(), 0.0
    q = best_scale(nonzero.abs(), n)
    if bits == 1:
        return weight.sign() * q, q
    return quantize_with_scale(weight, q, n), q
