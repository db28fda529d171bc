"""Euclidean projections onto sparsity and quantization sets (the ADMM Z-step).

* Sparsity: the structures of :mod:`advbench.compression.structures` (unstructured, filter, channel, block,
  pattern, N:M).
* Quantization (ADMM-NN, Ren et al., ASPLOS 2019): every non-zero weight goes to the nearest level of
  ``{i·q : i = ±1, …, ±n}`` with ``n = 2^(bits-1) - 1``; zeros stay zero.  The scale ``q`` is the exact
  minimiser of the squared error (:func:`best_scale`).  One bit is binary, ``±q`` with ``q`` the mean magnitude.

Each projection is exact: no other weight tensor of the set is closer to the input.
"""

from __future__ import annotations

from collections.abc import Callable

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


def best_scale(magnitudes: torch.Tensor, n: int) -> float:
    """The scale ``q > 0`` minimising ``E(q) = sum_i (a_i - q k_i)^2`` with ``k_i = clamp(round(a_i / q), 1, n)``
    over the non-zero magnitudes ``a``: the squared error of quantizing them to ``{q, 2q, ..., nq}``.

    Exact.  The assignment ``k`` only changes where ``a_i / q`` crosses a half-integer, at ``1/q = (j + 1/2) / a_i``
    (``j = 1..n-1``); between two such change points ``E`` is the quadratic ``C - 2 B q + A q^2`` with
    ``A = sum k^2`` and ``B = sum a k`` fixed, smallest at ``B / A`` clipped to the interval.  Sorting the change
    points and accumulating ``A`` and ``B`` gives every interval's minimum; the least of them is the global one.

    Only change points between two bounds are visited: with ``E_0`` the error of a good starting scale, the
    optimum satisfies ``sum_{a_i > n q} (a_i - n q)^2 <= E_0`` (a lower bound on ``q``) and
    ``sum_{a_i < q} (q - a_i)^2 <= E_0`` (an upper bound).  The sweep runs in float64 over windows of ``1/q``
    holding at most about :data:`SWEEP_CHUNK` change points each, so memory stays bounded for any layer size.
    One level (``n = 1``, binary) is the mean magnitude.
    """
    a = magnitudes.detach().to(torch.float64).flatten().cpu()
    if a.numel() == 0:
        return 0.0
    if n == 1:
        return float(a.mean())
    top = float(a.max())
    starts = torch.linspace(top / (2 * n), 2 * top / n, 16, dtype=torch.float64)
    errors = [scale_error(a, float(q), n) for q in starts]
    best_q = float(starts[int(torch.tensor(errors).argmin())])
    best_err = min(errors)
    bound = best_err * (1 + 1e-9) + 1e-300

    def above_ok(q: float) -> bool:
        return float((a - n * q).clamp(min=0).square().sum()) <= bound

    def below_ok(q: float) -> bool:
        return float((q - a).clamp(min=0).square().sum()) <= bound

    q_low = _bisect(above_ok, top / (4 * n * n + 4), best_q, want_low=True)
    q_high = _bisect(below_ok, best_q, 4 * top + 1.0, want_low=False)
    u_start, u_stop = 1.0 / q_high, 1.0 / q_low
    total_a, c = float(a.sum()), float(a.square().sum())
    step = max(SWEEP_CHUNK - a.numel(), SWEEP_CHUNK // 2) / total_a
    u_a = u_start
    while u_a < u_stop:
        u_b = min(u_a + step, u_stop)
        # the state at 1/q = u_a, then every change point in [u_a, u_b) in order
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
        big_a = float(k.square().sum()) + torch.cat([zero, ((j + 1).square() - j.square()).cumsum(0)])
        big_b = float((a * k).sum()) + torch.cat([zero, a[owner].cumsum(0)])
        u_lo = torch.cat([torch.tensor([u_a], dtype=torch.float64), u])
        u_hi = torch.cat([u, torch.tensor([u_b], dtype=torch.float64)])
        q = (big_b / big_a).clamp(min=1.0 / u_hi, max=1.0 / u_lo)
        err = c - 2 * big_b * q + big_a * q.square()
        m = int(err.argmin())
        if float(err[m]) < best_err:
            best_q, best_err = float(q[m]), float(err[m])
        u_a = u_b
    return best_q


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
