"""Threat models: the lp ball ∩ [0,1] box geometry that every attack steps and projects in.

A :class:`ThreatModel` knows, for one norm and radius ``eps``:

* :meth:`ThreatModel.project` — the *exact* Euclidean projection of a candidate onto
  ``{x' : ||x' - x||_p <= eps, 0 <= x' <= 1}`` (Wang, Zhang, Liu et al., NeurIPS 2021):

  - ``linf``: coordinate-wise clipping (the set is a box).
  - ``l2``: ``clip(v / (1 + lam), lo, hi)`` with the multiplier ``lam >= 0`` found by bisection.
  - ``l1``: a clipped soft-threshold ``clip(sign(v) * max(|v| - tau, 0), lo, hi)`` with ``tau`` found
    by bisection.
  - ``l0``: ``eps`` is a *count* of perturbed coordinates (pixels for single-channel images). Clip to
    the box, then keep the ``eps`` coordinates whose kept value reduces the distance the most.

  These are exact because the box always contains the zero perturbation, so the KKT conditions of
  the separable problem give the closed forms above with one scalar multiplier.
* :meth:`ThreatModel.random_init` — a random start inside the set, from an explicit generator.
* :meth:`ThreatModel.ascent_direction` — the steepest-ascent direction of a gradient for the norm
  (sign for linf, the normalised gradient for l2 and l0, a sparse sign vector for l1 that, given the
  current point, only uses coordinates that are not already at the box bound in the step's direction).

Perturbations are always measured per sample over all non-batch dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch

from advbench.errors import ConfigError

Norm = Literal["linf", "l2", "l1", "l0"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1", "l0")
_BISECTION_STEPS = 60


def parse_eps(value: str | float | int) -> float:
    """Parse an eps value given as a number or a fraction string such as ``'8/255'``.

    >>> parse_eps("8/255") == 8 / 255
    True
    >>> parse_eps("0.1")
    0.1
    >>> parse_eps("-1")
    Traceback (most recent call last):
    ...
    advbench.errors.ConfigError: eps must be >= 0, got -1.0 (from '-1')
    """
    if isinstance(value, (int, float)):
        eps = float(value)
    else:
        text = str(value).strip()
        try:
            eps = float(Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(
                f"cannot read eps '{value}': give a number such as 0.1 or a fraction such as 8/255"
            ) from None
    if not math.isfinite(eps) or eps < 0:
        raise ConfigError(f"eps must be >= 0, got {eps} (from '{value}')")
    return eps


def parse_eps_list(value: str | float | list | tuple) -> list[float]:
    """Parse a comma-separated list of eps values (fractions allowed): ``'2/255,8/255'``."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        items = [v for v in value.split(",") if v.strip()]
    else:
        items = [value]
    if not items:
        raise ConfigError("no eps given: pass at least one value, e.g. --eps 0.1 or --eps 2/255,8/255")
    return [parse_eps(v) for v in items]


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of a perturbation batch (``l0`` counts non-zero coordinates)."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.sum(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(delta.dtype)
    raise ConfigError(f"unknown norm '{norm}'; choose one of {', '.join(NORMS)}")


def _bisect_scalar(fn, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Per-sample bisection for a decreasing function: returns t with fn(t) <= 0 (the upper end)."""
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        positive = fn(mid) > 0
        lo = torch.where(positive, mid, lo)
        hi = torch.where(positive, hi, mid)
    return hi


def project_l2_box(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact projection of flat perturbations ``v`` (N, D) onto ``{||d||_2 <= eps} ∩ [lo, hi]``."""
    clipped = v.clamp(lo, hi)
    inside = clipped.norm(dim=1) <= eps
    if bool(inside.all()):
        return clipped
    if eps == 0:
        return torch.where(inside[:, None], clipped, torch.zeros_like(v))
    # ||clip(v/(1+lam))|| is non-increasing in lam; find the smallest lam with norm <= eps.
    upper = (v.norm(dim=1) / eps).clamp_min(1.0)[:, None]

    def excess(lam: torch.Tensor) -> torch.Tensor:
        return (v / (1 + lam)).clamp(lo, hi).norm(dim=1, keepdim=True) - eps

    lam = _bisect_scalar(excess, torch.zeros_like(upper), upper)
    projected = (v / (1 + lam)).clamp(lo, hi)
    return torch.where(inside[:, None], clipped, projected)


def project_l1_box(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact projection of flat perturbations ``v`` (N, D) onto ``{||d||_1 <= eps} ∩ [lo, hi]``."""
    clipped = v.clamp(lo, hi)
    inside = clipped.abs().sum(dim=1) <= eps
    if bool(inside.all()):
        return clipped

    def shrink(tau: torch.Tensor) -> torch.Tensor:
        return (v.sign() * (v.abs() - tau).clamp_min(0)).clamp(lo, hi)

    def excess(tau: torch.Tensor) -> torch.Tensor:
        return shrink(tau).abs().sum(dim=1, keepdim=True) - eps

    upper = v.abs().amax(dim=1, keepdim=True)
    tau = _bisect_scalar(excess, torch.zeros_like(upper), upper)
    return torch.where(inside[:, None], clipped, shrink(tau))


def project_l0_box(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, k: int) -> torch.Tensor:
    """Exact projection onto ``{at most k non-zeros} ∩ [lo, hi]``: keep the k largest gains."""
    clipped = v.clamp(lo, hi)
    if k >= v.shape[1]:
        return clipped
    if k <= 0:
        return torch.zeros_like(v)
    # Keeping coordinate i costs (v_i - c_i)^2 instead of v_i^2: the gain is v_i^2 - (v_i - c_i)^2.
    gain = v.square() - (v - clipped).square()
    keep = torch.zeros_like(v, dtype=torch.bool)
    keep.scatter_(1, gain.topk(k, dim=1).indices, True)
    return torch.where(keep, clipped, torch.zeros_like(v))


@dataclass(frozen=True)
class ThreatModel:
    """An lp ball of radius ``eps`` around the clean input, intersected with the [0,1] box.

    >>> tm = ThreatModel("linf", 0.1)
    >>> x = torch.full((1, 1, 2, 2), 0.95)
    >>> tm.project(x + 0.5, x).flatten().tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    norm: str
    eps: float

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm '{self.norm}'; choose one of {', '.join(NORMS)}")
        eps = parse_eps(self.eps)
        if self.norm == "l0" and eps != int(eps):
            raise ConfigError(f"l0 eps counts coordinates and must be a whole number, got {eps}")
        if self.norm == "linf" and eps > 1:
            raise ConfigError(f"linf eps {eps:g} is larger than the whole [0, 1] pixel range, so nothing would be "
                              f"bounded; images are in [0, 1]: did you mean {eps:g}/255?")
        object.__setattr__(self, "eps", eps)

    # -- geometry -------------------------------------------------------------------------------
    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Exact projection of ``x_adv`` onto the ball around ``x`` intersected with [0,1]."""
        if self.norm == "linf":  # the set is a box: three element-wise ops
            return torch.minimum(torch.maximum(x_adv, x - self.eps), x + self.eps).clamp_(0.0, 1.0)
        delta = self.project_delta(x_adv - x, x)
        return (x + delta).clamp(0.0, 1.0)

    def project_delta(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project a perturbation so that ``x + delta`` is in the set (``x`` may broadcast)."""
        x_b = x.expand_as(delta) if x.shape != delta.shape else x
        return self.project_delta_bounds(delta, -x_b, 1 - x_b)

    def project_delta_bounds(self, delta: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Project ``delta`` onto the ball ∩ ``[lo, hi]`` (bounds shaped like ``delta``, ``lo <= 0 <= hi``).

        A universal perturbation shared by several inputs uses the intersection of their boxes:
        ``lo = max_i(-x_i)``, ``hi = min_i(1 - x_i)``.
        """
        shape = delta.shape
        n = shape[0]
        lo = lo.reshape(n, -1)
        hi = hi.reshape(n, -1)
        flat = delta.reshape(n, -1)
        if self.norm == "linf":
            out = flat.clamp(-self.eps, self.eps).clamp(lo, hi)
        elif self.norm == "l2":
            out = project_l2_box(flat, lo, hi, self.eps)
        elif self.norm == "l1":
            out = project_l1_box(flat, lo, hi, self.eps)
        else:
            out = project_l0_box(flat, lo, hi, int(self.eps))
        return out.reshape(shape)

    def contains(self, x_adv: torch.Tensor, x: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
        """Per-sample check that ``x_adv`` is inside the box and within the budget (with tolerance)."""
        in_box = ((x_adv >= -atol) & (x_adv <= 1 + atol)).reshape(x.shape[0], -1).all(dim=1)
        size = perturbation_norm(x_adv - x, self.norm)
        slack = 0.0 if self.norm == "l0" else atol * max(1.0, self.eps)
        return in_box & (size <= self.eps + slack)

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random point of the set around ``x`` (uniform in the linf ball; random direction and
        radius for l2/l1; ``eps`` random coordinates for l0), already projected.

        The draws happen on ``generator``'s device (``x``'s without one) and then move to ``x``'s device."""
        n = x.shape[0]
        if n == 0:
            return x.clone()
        d = x[0].numel()
        draw_on = generator.device if generator is not None else x.device
        kw = {"generator": generator, "device": draw_on, "dtype": x.dtype}
        if self.norm == "linf":
            delta = (torch.rand(x.shape, **kw) * 2 - 1) * self.eps
        elif self.norm in ("l2", "l1"):
            if self.norm == "l2":
                direction = torch.randn((n, d), **kw)
                direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
            else:
                direction = -torch.log(torch.rand((n, d), **kw).clamp_min(1e-12))  # exponential
                direction = direction * torch.sign(torch.rand((n, d), **kw) - 0.5)
                direction = direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
            radius = self.eps * torch.rand((n, 1), **kw) ** (1.0 / d)
            delta = (direction * radius).reshape(x.shape)
        else:
            scores = torch.rand((n, d), **kw)
            k = min(int(self.eps), d)
            keep = torch.zeros((n, d), dtype=torch.bool, device=draw_on)
            if k > 0:
                keep.scatter_(1, scores.topk(k, dim=1).indices, True)
            target = torch.rand((n, d), **kw).to(x.device)
            keep = keep.to(x.device)
            delta = torch.where(keep, target - x.reshape(n, d), torch.zeros_like(target)).reshape(x.shape)
        return self.project(x + delta.to(x.device), x)

    def ascent_direction(self, grad: torch.Tensor, l1_sparsity: float = 0.95,
                         x_adv: torch.Tensor | None = None) -> torch.Tensor:
        """Steepest-ascent direction of unit norm for this geometry.

        linf: ``sign(g)``. l2 and l0: ``g / ||g||_2`` (l0 then relies on the projection to pick the
        coordinates). l1: the sign of the top ``(1 - l1_sparsity)`` fraction of coordinates by
        ``|g|``, scaled to unit l1 norm (a sparse step, as in SLIDE / APGD-l1).

        ``x_adv`` is the point the step starts from (in [0,1], shaped like ``grad``).  With it, the l1 step
        picks its coordinates only among those that can still move along ``sign(g)``: a coordinate already
        at 1 with ``g > 0``, at 0 with ``g < 0``, or with ``g = 0`` gets no mass, so no part of the step is
        lost to clipping (the steepest ascent direction over the l1 ball ∩ box, as in l1-APGD, Croce & Hein,
        ICML 2021).  When fewer coordinates can move than the sparsity asks for, only those are used; when
        none can, the direction is zero.  linf, l2 and l0 ignore ``x_adv``.
        """
        n = grad.shape[0]
        flat = grad.reshape(n, -1)
        if self.norm == "linf":
            out = flat.sign()
        elif self.norm in ("l2", "l0"):
            out = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        else:
            k = max(1, int(round(flat.shape[1] * (1 - l1_sparsity))))
            score = flat.abs()
            if x_adv is not None:
                point = x_adv.reshape(n, -1)
                movable = ((flat > 0) & (point < 1)) | ((flat < 0) & (point > 0))
                score = torch.where(movable, score, torch.full_like(score, -1.0))
            top = score.topk(k, dim=1).indices
            signs = flat.gather(1, top).sign()
            if x_adv is not None:
                signs = signs * (score.gather(1, top) >= 0)
            out = torch.zeros_like(flat)
            out.scatter_(1, top, signs)
            out = out / out.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
        return out.reshape(grad.shape)

    def default_step_size(self, steps: int) -> float:
        """Madry-style default: 2.5 · eps / steps (for l0, a step of 1.0 in pixel units)."""
        if self.norm == "l0":
            return 1.0
        return 2.5 * self.eps / max(1, steps)
