"""Seeded scalar draws for the synthetic scene generators: every random choice comes from an explicit
``torch.Generator``, so a seed fixes a whole data set."""

from __future__ import annotations

import torch


def uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    """One draw from U(lo, hi)."""
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def choice(gen: torch.Generator, n: int) -> int:
    """One index drawn uniformly from ``range(n)``."""
    return int(torch.randint(n, (), generator=gen))
