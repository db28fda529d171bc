"""The ball ∩ box projections are exact, the random start is feasible, steps have unit norm."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from advbench.errors import ConfigError
from advbench.threat import NORMS, ThreatModel, parse_eps, parse_eps_list, perturbation_norm


def _feasible_points(x: torch.Tensor, tm: ThreatModel, n: int, gen: torch.Generator) -> torch.Tensor:
    """Random points of the set around x (box points pulled into the ball by scaling)."""
    z = torch.rand((n, *x.shape[1:]), generator=gen, dtype=x.dtype)
    delta = z - x
    size = perturbation_norm(delta, tm.norm).reshape(-1, *([1] * (x.ndim - 1)))
    scale = torch.clamp(tm.eps / size.clamp_min(1e-12), max=1.0) * torch.rand(size.shape, generator=gen, dtype=x.dtype)
    return x + delta * scale  # the box is convex and contains x, so scaling towards x stays inside


def _project_np(tm: ThreatModel, v: np.ndarray, x: np.ndarray) -> np.ndarray:
    shape = (1, 1, 1, v.size)
    return tm.project(torch.tensor(v).reshape(shape), torch.tensor(x).reshape(shape)).flatten().numpy()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5), ("l1", 0.8)])
def test_projection_satisfies_variational_inequality(norm: str, eps: float) -> None:
    """p = proj(v) iff (v - p)·(z - p) <= 0 for every feasible z: checked on many random z."""
    gen = torch.Generator().manual_seed(0)
    tm = ThreatModel(norm, eps)
    for trial in range(20):
        x = torch.rand((1, 1, 3, 3), generator=gen, dtype=torch.float64)
        v = x + (torch.rand(x.shape, generator=gen, dtype=torch.float64) * 2 - 1) * (0.5 + trial / 10)
        p = tm.project(v, x)
        assert bool(tm.contains(p, x, atol=1e-9).all())
        z = _feasible_points(x, tm, 2000, gen)
        inner = ((v - p) * (z - p)).flatten(1).sum(1)
        assert float(inner.max()) <= 1e-7


@pytest.mark.parametrize("norm,eps", [("l2", 0.4), ("l1", 0.6)])
def test_projection_matches_numerical_solver(norm: str, eps: float) -> None:
    rng = np.random.default_rng(1)
    tm = ThreatModel(norm, eps)
    for _ in range(5):
        x = rng.random(4)
        v = x + rng.normal(scale=0.6, size=4)
        ours = _project_np(tm, v, x)
        p = 2 if norm == "l2" else 1
        cons = [{"type": "ineq", "fun": lambda d, p=p: eps - np.linalg.norm(d, p)}]
        best = min(
            (minimize(lambda d, t=v - x: np.sum((d - t) ** 2), start, bounds=list(zip(-x, 1 - x, strict=True)),
                      constraints=cons, method="SLSQP", options={"ftol": 1e-12, "maxiter": 500})
             for start in (np.zeros(4), np.clip(v - x, -x, 1 - x) * 0.5)),
            key=lambda r: r.fun,
        )
        assert np.sum((ours - v) ** 2) <= best.fun + 1e-6
        np.testing.assert_allclose(ours - x, best.x, atol=2e-3)


def test_l0_projection_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    for k in (1, 2, 3):
        tm = ThreatModel("l0", k)
        for _ in range(10):
            x = rng.random(5)
            v = x + rng.normal(scale=0.7, size=5)
            ours = _project_np(tm, v, x)
            best = np.inf
            for subset in itertools.combinations(range(5), k):
                cand = x.copy()
                cand[list(subset)] = np.clip(v[list(subset)], 0, 1)
                best = min(best, float(np.sum((cand - v) ** 2)))
            assert np.sum((ours - v) ** 2) == pytest.approx(best, abs=1e-12)
            assert np.count_nonzero(ours - x) <= k


def test_linf_projection_is_clipping() -> None:
    x = torch.tensor([[[[0.0, 0.5, 0.98]]]])
    out = ThreatModel("linf", 0.1).project(x + torch.tensor([[[[-0.3, 0.3, 0.05]]]]), x)
    assert torch.allclose(out, torch.tensor([[[[0.0, 0.6, 1.0]]]]))


@pytest.mark.parametrize("norm", NORMS)
def test_projection_is_idempotent(norm: str) -> None:
    gen = torch.Generator().manual_seed(3)
    tm = ThreatModel(norm, 3 if norm == "l0" else 0.3)
    x = torch.rand((8, 1, 4, 4), generator=gen)
    once = tm.project(x + torch.randn(x.shape, generator=gen), x)
    assert torch.allclose(tm.project(once, x), once, atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_random_init_is_feasible_and_seeded(norm: str) -> None:
    tm = ThreatModel(norm, 5 if norm == "l0" else 0.3)
    x = torch.rand((16, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    a = tm.random_init(x, torch.Generator().manual_seed(7))
    b = tm.random_init(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert bool(tm.contains(a, x).all())
    assert float((a - x).abs().sum()) > 0


@pytest.mark.parametrize("norm,expected", [("linf", "linf"), ("l2", "l2"), ("l1", "l1"), ("l0", "l2")])
def test_ascent_direction_has_unit_norm(norm: str, expected: str) -> None:
    g = torch.randn((4, 1, 5, 5), generator=torch.Generator().manual_seed(0))
    d = ThreatModel(norm, 3 if norm == "l0" else 0.1).ascent_direction(g)
    assert torch.allclose(perturbation_norm(d, expected), torch.ones(4), atol=1e-5)
    assert bool(((d * g).flatten(1).sum(1) > 0).all())


def test_eps_parsing_and_errors() -> None:
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps_list("2/255, 0.1") == [pytest.approx(2 / 255), 0.1]
    for bad in ("-0.1", "abc", "1/0", "nan"):
        with pytest.raises(ConfigError):
            parse_eps(bad)
    with pytest.raises(ConfigError, match="norm"):
        ThreatModel("l3", 0.1)
    with pytest.raises(ConfigError, match="whole number"):
        ThreatModel("l0", 2.5)
