"""Salient-object-detection metrics: MAE, F-measure, S-measure and E-measure, batched and deterministic.

Inputs: ``pred`` saliency probabilities in [0,1] and ``gt`` binary masks, shaped ``(B,1,H,W)``, ``(B,H,W)`` or
``(H,W)``.  Predictions are used as they are (no per-map min-max normalisation, which some toolboxes apply to maps
saved as images).  Every per-image function returns a float64 tensor with one value (or one curve) per image;
:func:`sod_metrics` and :class:`SODMetrics` average over images.  Computation is in float64 on the CPU.

* **MAE**: ``mean |pred - gt|`` over pixels.
* **F-measure** (Achanta, Hemami, Estrada and Susstrunk, "Frequency-tuned salient region detection", CVPR 2009),
  ``F = (1 + beta^2) P R / (beta^2 P + R)`` with ``beta^2 = 0.3``.  ``pred`` is binarised as ``pred >= t`` at the
  256 thresholds ``t = k/255, k = 0..255``.  A precision or recall with a zero denominator counts as 0, and so does
  F then (an all-zero ``gt`` scores F = 0 at every threshold).  The curves are averaged over images first;
  ``max_f`` and ``mean_f`` are the maximum and the mean of that average curve.  ``adaptive_f`` binarises each map
  at ``min(2 mean(pred), 1)`` (Achanta et al.'s adaptive threshold).
* **S-measure** (Fan, Cheng, Liu, Li and Borji, "Structure-measure: A new way to evaluate foreground maps",
  ICCV 2017), ``S = alpha S_o + (1 - alpha) S_r`` with ``alpha = 0.5``, clipped at 0; ``S = 1 - mean(pred)``
  when ``gt`` is all 0 and ``S = mean(pred)`` when ``gt`` is all 1.  Object-aware ``S_o = u O_fg + (1-u) O_bg``,
  ``u = mean(gt)``, ``O = 2 m / (m^2 + 1 + s)`` with ``m``, ``s`` the mean and the sample standard deviation
  (``N - 1``) of ``pred`` on the object (of ``1 - pred`` on the background).  Region-aware ``S_r``: split at the
  gt centroid ``(X, Y)`` (1-based, rounded half up, as in the authors' MATLAB code; PySODMetrics rounds the
  0-based mean half to even, so the two differ only when the centroid falls exactly on a half pixel) into four
  blocks weighted by area, each scored with the SSIM-like ``4 m_x m_y s_xy / ((m_x^2 + m_y^2)(s_x^2 + s_y^2))``
  (variances over ``N - 1 + eps``; 1 when numerator and denominator are both 0; an empty block has weight 0).
* **E-measure** (Fan, Gong, Cao, Ren, Cheng and Borji, "Enhanced-alignment measure for binary foreground map
  evaluation", IJCAI 2018).  Variant implemented: ``pred`` is binarised at the same 256 thresholds; for a binary
  map ``FM`` the bias matrices are ``phi_FM = FM - mean(FM)`` and ``phi_GT = GT - mean(GT)``, the alignment is
  ``xi = 2 phi_GT phi_FM / (phi_GT^2 + phi_FM^2)`` (0 where both are 0), the enhanced alignment
  ``(1 + xi)^2 / 4``, and E is its mean over pixels.  When ``gt`` is all 0 the enhanced matrix is ``1 - FM``, when
  all 1 it is ``FM``.  The authors' code divides the sum by ``N - 1`` instead of ``N`` and adds eps to the
  alignment's denominator; this one divides by ``N``, so a perfect map scores exactly 1 (the two differ by the
  factor ``N/(N-1)``, under 0.01% at 128x128).  ``mean_e``/``max_e`` are the
  mean/max of the image-averaged curve; ``adaptive_e`` binarises at ``min(2 mean(pred), 1)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from advbench.devices import module_device
from advbench.errors import InputError

NUM_THRESHOLDS = 256
BETA2 = 0.3
ALPHA = 0.5
EPS = 2.220446049250313e-16  # float64 machine epsilon, the eps of the reference MATLAB code

__all__ = [
    "SODMetrics",
    "adaptive_e_measure",
    "adaptive_f_measure",
    "e_measure_curve",
    "evaluate_sod",
    "f_measure_curve",
    "mae",
    "precision_recall_curve",
    "s_measure",
    "sod_metrics",
    "thresholds",
]


def thresholds() -> torch.Tensor:
    """The 256 binarisation thresholds ``k/255``, float64."""
    return torch.arange(NUM_THRESHOLDS, dtype=torch.float64) / (NUM_THRESHOLDS - 1)


def _prepare(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and flatten to ``pred (B,H,W)`` float64 and ``gt (B,H,W)`` bool."""
    if not isinstance(pred, torch.Tensor) or not isinstance(gt, torch.Tensor):
        raise InputError(f"SOD metrics take tensors, got pred={type(pred).__name__}, gt={type(gt).__name__}")

    def squeeze(t: torch.Tensor, name: str) -> torch.Tensor:
        if t.dim() == 2:
            return t[None]
        if t.dim() == 3:
            return t
        if t.dim() == 4 and t.shape[1] == 1:
            return t[:, 0]
        raise InputError(f"SOD metrics: {name} must be (B,1,H,W), (B,H,W) or (H,W), got {tuple(t.shape)}")

    p, g = squeeze(pred, "pred"), squeeze(gt, "gt")
    if p.shape != g.shape:
        raise InputError(f"SOD metrics: pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
    if p.numel() == 0:
        raise InputError(f"SOD metrics: pred {tuple(pred.shape)} holds no pixels")
    if not p.is_floating_point():
        raise InputError(f"SOD metrics: pred must be float probabilities in [0,1], got {p.dtype}")
    p = p.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(p).all()) or float(p.min()) < 0.0 or float(p.max()) > 1.0:
        raise InputError("SOD metrics: pred must hold probabilities in [0,1]; apply .sigmoid() to logits")
    g = g.detach().cpu()
    if g.dtype != torch.bool:
        if not bool(((g == 0) | (g == 1)).all()):
            raise InputError("SOD metrics: gt must be binary (0/1 or bool); threshold it, e.g. gt > 0.5")
        g = g == 1
    return p, g


# ------------------------------------------------------------------------------------------------------------ MAE

def mae(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean absolute error ``mean |pred - gt|`` of each image, ``(B,)``."""
    p, g = _prepare(pred, gt)
    return (p - g.double()).abs().flatten(1).mean(1)


# -------------------------------------------------------------------------------------- counts at every threshold

def _threshold_counts(p: torch.Tensor, g: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For thresholds ``t`` (B,T): true positives and predicted positives of ``p >= t``, object size, pixel count."""
    flat_p, flat_g = p.flatten(1), g.flatten(1)
    n = flat_p.shape[1]
    sorted_p, order = flat_p.sort(dim=1, stable=True)
    sorted_g = flat_g.gather(1, order).double()
    # objects at sorted positions j..n-1 (a trailing 0 for "none")
    suffix = torch.cat([sorted_g.flip(1).cumsum(1).flip(1), torch.zeros(len(p), 1, dtype=torch.float64)], dim=1)
    first = torch.searchsorted(sorted_p, t.contiguous(), side="left")  # first position with p >= t
    tp = suffix.gather(1, first)
    pp = (n - first).double()
    return tp, pp, sorted_g.sum(1, keepdim=True), n


def _adaptive_t(p: torch.Tensor) -> torch.Tensor:
    return (2 * p.flatten(1).mean(1, keepdim=True)).clamp(max=1.0)


def _f_from_counts(tp: torch.Tensor, pp: torch.Tensor, g: torch.Tensor, beta2: float) -> torch.Tensor:
    precision = torch.where(pp > 0, tp / pp.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(g > 0, tp / g.clamp(min=1), torch.zeros_like(tp))
    denom = beta2 * precision + recall
    return torch.where(denom > 0, (1 + beta2) * precision * recall / denom.clamp(min=EPS), torch.zeros_like(tp))


def precision_recall_curve(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision and recall of ``pred >= k/255`` for k = 0..255, each ``(B, 256)`` (0 for a zero denominator)."""
    p, g = _prepare(pred, gt)
    tp, pp, obj, _ = _threshold_counts(p, g, thresholds().expand(len(p), -1))
    precision = torch.where(pp > 0, tp / pp.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(obj > 0, tp / obj.clamp(min=1), torch.zeros_like(tp))
    return precision, recall


def f_measure_curve(pred: torch.Tensor, gt: torch.Tensor, *, beta2: float = BETA2) -> torch.Tensor:
    """F-measure (Achanta et al., CVPR 2009) of ``pred >= k/255`` for k = 0..255, ``(B, 256)``."""
    p, g = _prepare(pred, gt)
    tp, pp, obj, _ = _threshold_counts(p, g, thresholds().expand(len(p), -1))
    return _f_from_counts(tp, pp, obj, beta2)


def adaptive_f_measure(pred: torch.Tensor, gt: torch.Tensor, *, beta2: float = BETA2) -> torch.Tensor:
    """F-measure at the adaptive threshold ``min(2 mean(pred), 1)`` (Achanta et al., CVPR 2009), ``(B,)``."""
    p, g = _prepare(pred, gt)
    tp, pp, obj, _ = _threshold_counts(p, g, _adaptive_t(p))
    return _f_from_counts(tp, pp, obj, beta2)[:, 0]


# ------------------------------------------------------------------------------------------------------- E-measure

def _enhanced(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Enhanced alignment ``(1 + xi)^2 / 4`` of bias values ``a`` (map) and ``b`` (gt) (Fan et al., IJCAI 2018)."""
    denom = a * a + b * b  # 0 only when a = b = 0, where xi = 0 (the reference adds eps instead)
    xi = torch.where(denom > 0, 2 * a * b / denom.clamp(min=EPS), torch.zeros_like(denom))
    return (xi + 1) ** 2 / 4


def _e_from_counts(tp: torch.Tensor, pp: torch.Tensor, obj: torch.Tensor, n: int) -> torch.Tensor:
    """E-measure from the counts of the four (map, gt) pixel kinds; bias values take two values each."""
    mu_f, mu_g = pp / n, obj / n
    total = (tp * _enhanced(1 - mu_f, 1 - mu_g) + (pp - tp) * _enhanced(1 - mu_f, -mu_g)
             + (obj - tp) * _enhanced(-mu_f, 1 - mu_g) + (n - obj - pp + tp) * _enhanced(-mu_f, -mu_g))
    general = total / n
    return torch.where(obj == 0, (n - pp) / n, torch.where(obj == n, pp / n, general))


def e_measure_curve(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """E-measure (Fan et al., IJCAI 2018) of ``pred >= k/255`` for k = 0..255, ``(B, 256)``; see the module doc."""
    p, g = _prepare(pred, gt)
    tp, pp, obj, n = _threshold_counts(p, g, thresholds().expand(len(p), -1))
    return _e_from_counts(tp, pp, obj, n)


def adaptive_e_measure(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """E-measure at the adaptive threshold ``min(2 mean(pred), 1)``, ``(B,)``."""
    p, g = _prepare(pred, gt)
    tp, pp, obj, n = _threshold_counts(p, g, _adaptive_t(p))
    return _e_from_counts(tp, pp, obj, n)[:, 0]


# ------------------------------------------------------------------------------------------------------- S-measure

def _object_score(values: torch.Tensor) -> float:
    """``2 m / (m^2 + 1 + s)``: m the mean, s the sample standard deviation (Fan et al., ICCV 2017, eq. 5)."""
    if values.numel() == 0:
        return 0.0
    m = float(values.mean())
    s = float(values.std(correction=1)) if values.numel() > 1 else 0.0
    return 2 * m / (m * m + 1 + s + EPS)


def _centroid(g: torch.Tensor) -> tuple[int, int]:
    """1-based ``(X, Y)`` of the object's centre of mass, rounded half up; the image centre if there is none."""
    h, w = g.shape
    rows, cols = torch.nonzero(g, as_tuple=True)
    if rows.numel() == 0:
        return math.floor(w / 2 + 0.5), math.floor(h / 2 + 0.5)
    x = float((cols + 1).double().mean())
    y = float((rows + 1).double().mean())
    return math.floor(x + 0.5), math.floor(y + 0.5)


def _block_ssim(p: torch.Tensor, g: torch.Tensor) -> float:
    """The SSIM-like block score of the S-measure's region term (Fan et al., ICCV 2017, eq. 3)."""
    n = p.numel()
    if n == 0:
        return 0.0
    gd = g.double()
    x, y = float(p.mean()), float(gd.mean())
    dx, dy = p - x, gd - y
    sigma_x = float((dx * dx).sum()) / (n - 1 + EPS)
    sigma_y = float((dy * dy).sum()) / (n - 1 + EPS)
    sigma_xy = float((dx * dy).sum()) / (n - 1 + EPS)
    alpha = 4 * x * y * sigma_xy
    beta = (x * x + y * y) * (sigma_x + sigma_y)
    if alpha != 0:
        return alpha / (beta + EPS)
    return 1.0 if beta == 0 else 0.0


def _s_region(p: torch.Tensor, g: torch.Tensor) -> float:
    h, w = g.shape
    x, y = _centroid(g)
    area = h * w
    blocks = ((slice(0, y), slice(0, x), x * y), (slice(0, y), slice(x, w), (w - x) * y),
              (slice(y, h), slice(0, x), x * (h - y)), (slice(y, h), slice(x, w), (w - x) * (h - y)))
    return sum(size / area * _block_ssim(p[rs, cs], g[rs, cs]) for rs, cs, size in blocks if size > 0)


def _s_object(p: torch.Tensor, g: torch.Tensor) -> float:
    u = float(g.double().mean())
    return u * _object_score(p[g]) + (1 - u) * _object_score(1 - p[~g])


def s_measure(pred: torch.Tensor, gt: torch.Tensor, *, alpha: float = ALPHA) -> torch.Tensor:
    """S-measure (Fan et al., ICCV 2017) of each image, ``(B,)``; see the module doc for the definition."""
    p, g = _prepare(pred, gt)
    scores = []
    for pi, gi in zip(p, g, strict=True):
        share = float(gi.double().mean())
        if share == 0.0:
            scores.append(1.0 - float(pi.mean()))
        elif share == 1.0:
            scores.append(float(pi.mean()))
        else:
            scores.append(max(0.0, alpha * _s_object(pi, gi) + (1 - alpha) * _s_region(pi, gi)))
    return torch.tensor(scores, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------- aggregation

class SODMetrics:
    """Accumulates all SOD metrics over batches (``update`` / ``compute`` / ``reset`` / ``merge``).

    ``compute`` returns the image means of MAE, S-measure and the adaptive F/E, and the max and mean of the
    image-averaged F and E curves (see the module doc), plus ``n_images``.
    """

    def __init__(self, *, beta2: float = BETA2, alpha: float = ALPHA) -> None:
        self.beta2, self.alpha = float(beta2), float(alpha)
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self.n_images = 0
        self._sums = {"mae": 0.0, "s_measure": 0.0, "adaptive_f": 0.0, "adaptive_e": 0.0}
        self._f_curve = torch.zeros(NUM_THRESHOLDS, dtype=torch.float64)
        self._e_curve = torch.zeros(NUM_THRESHOLDS, dtype=torch.float64)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add a batch of probability maps and their binary masks."""
        p, g = _prepare(pred, gt)
        tp, pp, obj, n = _threshold_counts(p, g, thresholds().expand(len(p), -1))
        self._f_curve += _f_from_counts(tp, pp, obj, self.beta2).sum(0)
        self._e_curve += _e_from_counts(tp, pp, obj, n).sum(0)
        atp, app, aobj, _ = _threshold_counts(p, g, _adaptive_t(p))
        self._sums["adaptive_f"] += float(_f_from_counts(atp, app, aobj, self.beta2).sum())
        self._sums["adaptive_e"] += float(_e_from_counts(atp, app, aobj, n).sum())
        self._sums["mae"] += float(mae(p, g).sum())
        self._sums["s_measure"] += float(s_measure(p, g, alpha=self.alpha).sum())
        self.n_images += len(p)

    def merge(self, other: SODMetrics) -> SODMetrics:
        """Add the images ``other`` has seen (for example from another worker); returns ``self``."""
        if (other.beta2, other.alpha) != (self.beta2, self.alpha):
            raise InputError(f"cannot merge SODMetrics with beta2/alpha {other.beta2}/{other.alpha} into "
                             f"{self.beta2}/{self.alpha}; use the same settings")
        self.n_images += other.n_images
        for key, value in other._sums.items():
            self._sums[key] += value
        self._f_curve += other._f_curve
        self._e_curve += other._e_curve
        return self

    def compute(self) -> dict[str, Any]:
        """The averaged metrics; raises :class:`InputError` if no image was added."""
        if self.n_images == 0:
            raise InputError("SODMetrics.compute(): no images were added; call update(pred, gt) first")
        n = self.n_images
        f_curve, e_curve = self._f_curve / n, self._e_curve / n
        return {
            "mae": self._sums["mae"] / n,
            "max_f": float(f_curve.max()),
            "mean_f": float(f_curve.mean()),
            "adaptive_f": self._sums["adaptive_f"] / n,
            "s_measure": self._sums["s_measure"] / n,
            "max_e": float(e_curve.max()),
            "mean_e": float(e_curve.mean()),
            "adaptive_e": self._sums["adaptive_e"] / n,
            "n_images": n,
        }


def sod_metrics(pred_probs: torch.Tensor, gt: torch.Tensor, *, beta2: float = BETA2,
                alpha: float = ALPHA) -> dict[str, Any]:
    """All SOD metrics of a set of probability maps, averaged over images (see :class:`SODMetrics`).

    >>> gt = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    >>> m = sod_metrics(gt.clone(), gt)
    >>> m["mae"], m["max_f"], round(m["s_measure"], 6), m["max_e"]
    (0.0, 1.0, 1.0, 1.0)
    """
    acc = SODMetrics(beta2=beta2, alpha=alpha)
    acc.update(pred_probs, gt)
    return acc.compute()


def evaluate_sod(model: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor, *,
                 batch_size: int = 64) -> dict[str, Any]:
    """:func:`~advbench.sod.metrics.sod_metrics` of ``sigmoid(model(x))`` against ``masks`` (eval mode, no grad;
    batches move to the model's device)."""
    was_training = model.training
    model.eval()
    dev = module_device(model, default=x.device)
    try:
        with torch.no_grad():
            probs = torch.cat([model(x[i:i + batch_size].to(dev)).sigmoid() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    return sod_metrics(probs, masks)
