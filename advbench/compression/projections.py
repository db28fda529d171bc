"""Euclidean projections onto sparsity and quantization sets (the ADMM Z-step).

* Sparsity: the structures of :mod:`advbench.compression.structures` (unstructured, filter, channel, block,
  pattern, N:M).
* Quantization (ADMM-NN, Ren et al., ASPLOS 2019): every non-zero weight goes to the nearest level of
  ``{i·q : i = ±1, …, ±n}`` with ``n = 2^(bits-1) - 1``; zeros stay zero; ``q`` is found by a grid search
  that minimises the squared error.  One bit is binary, ``±q`` with ``q`` the mean magnitude (exact).

Each projection is exact: no other weight tensor of the set is closer to the input.
"""

from __future__ import annotations

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


def quantize(weight: torch.Tensor, bits: int, grid: int = 400) -> tuple[torch.Tensor, float]:
    """ADMM-NN quantization projection: returns the quantized weight and the chosen scale ``q``.

    One bit is the binary code ``±q`` of the fully binarized networks of progressive ADMM (Ye et al., 2019): its
    best scale is exactly the mean magnitude of the non-zero weights (no search)."""
    n = quantization_levels(bits)
    nonzero = weight[weight != 0]
    if nonzero.numel() == 0:
        return weight.clone(), 0.0
    if bits == 1:
        q = float(nonzero.abs().mean())
        return weight.sign() * q, q
    top = float(nonzero.abs().max())
    candidates = torch.linspace(top / (4 * n), 2 * top / n, grid, dtype=weight.dtype, device=weight.device)
    errors = torch.stack([(quantize_with_scale(nonzero, float(q), n) - nonzero).square().sum() for q in candidates])
    q = float(candidates[int(errors.argmin())])
    return quantize_with_scale(weight, q, n), q
