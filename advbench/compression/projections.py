"""Euclidean projections onto sparsity and quantization sets (the ADMM Z-step).

* Unstructured (Zhang et al., ECCV 2018): keep the k largest-magnitude weights of a layer.
* Filter (StructADMM, Zhang et al. 2018): reshape a conv weight to (out, in·kh·kw) and keep the k rows
  with the largest l2 norm; for a linear layer the rows are output neurons.
* Channel: keep the k input channels (columns) with the largest l2 norm.
* Quantization (ADMM-NN, Ren et al., ASPLOS 2019): every non-zero weight goes to the nearest level of
  ``{i·q : i = ±1, …, ±n}`` with ``n = 2^(bits-1) - 1``; zeros stay zero; ``q`` is found by a grid search
  that minimises the squared error.

Each projection is exact: no other weight tensor of the set is closer to the input.
"""

from __future__ import annotations

import torch

from advbench.errors import ConfigError

STRUCTURES = ("unstructured", "filter", "channel")


def kept_count(total: int, ratio: float) -> int:
    """How many of ``total`` units survive pruning ``ratio`` of them (at least one)."""
    if not 0 <= ratio < 1:
        raise ConfigError(f"a pruning ratio must be in [0, 1), got {ratio}")
    return max(1, round((1 - ratio) * total))


def _top_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[scores.topk(k).indices] = True
    return mask


def sparsity_mask(weight: torch.Tensor, ratio: float, structure: str) -> torch.Tensor:
    """The 0/1 mask (shaped like ``weight``) of the projection onto the sparsity set."""
    if structure == "unstructured":
        flat = _top_mask(weight.detach().abs().flatten(), kept_count(weight.numel(), ratio))
        return flat.reshape(weight.shape).to(weight.dtype)
    if weight.ndim < 2:
        raise ConfigError(f"{structure} pruning needs a 2-D or 4-D weight, got shape {tuple(weight.shape)}")
    if structure == "filter":
        rows = _top_mask(weight.detach().flatten(1).norm(dim=1), kept_count(weight.shape[0], ratio))
        return rows.view(-1, *([1] * (weight.ndim - 1))).expand_as(weight).to(weight.dtype)
    if structure == "channel":
        dims = [0] + list(range(2, weight.ndim))
        cols = _top_mask(weight.detach().square().sum(dim=dims).sqrt(), kept_count(weight.shape[1], ratio))
        return cols.view(1, -1, *([1] * (weight.ndim - 2))).expand_as(weight).to(weight.dtype)
    raise ConfigError(f"unknown pruning structure '{structure}'; choose one of {', '.join(STRUCTURES)}")


def project_sparse(weight: torch.Tensor, ratio: float, structure: str) -> torch.Tensor:
    """Exact projection of ``weight`` onto the set with ``ratio`` of its units (weights, filters or
    channels) set to zero."""
    return weight * sparsity_mask(weight, ratio, structure)


def quantization_levels(bits: int) -> int:
    """n for a ``bits``-bit symmetric code with a zero: levels ±1…±n times the scale."""
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ConfigError(f"quantization width must be a whole number of bits in [2, 16], got {bits}")
    return 2 ** (bits - 1) - 1


def quantize_with_scale(weight: torch.Tensor, q: float, n: int) -> torch.Tensor:
    """Nearest level of ``{i·q : i = ±1..±n}`` for every non-zero weight; zeros stay zero."""
    index = (weight.abs() / q).round().clamp(1, n)
    return torch.where(weight == 0, torch.zeros_like(weight), weight.sign() * index * q)


def quantize(weight: torch.Tensor, bits: int, grid: int = 400) -> tuple[torch.Tensor, float]:
    """ADMM-NN quantization projection: returns the quantized weight and the chosen scale ``q``."""
    n = quantization_levels(bits)
    nonzero = weight[weight != 0]
    if nonzero.numel() == 0:
        return weight.clone(), 0.0
    top = float(nonzero.abs().max())
    candidates = torch.linspace(top / (4 * n), 2 * top / n, grid, dtype=weight.dtype, device=weight.device)
    errors = torch.stack([(quantize_with_scale(nonzero, float(q), n) - nonzero).square().sum() for q in candidates])
    q = float(candidates[int(errors.argmin())])
    return quantize_with_scale(weight, q, n), q
