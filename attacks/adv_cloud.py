"""The adversarial cloud attack (Sun, Fu, Li et al., arXiv 2306.17431; reconstructed from the paper's description).

A natural-looking cloud hides an attack: with the cloud mask ``M`` (from :mod:`advbench.attacks.clouds`) and the
cloudy image ``x_c = x (1 - M) + c M``, the attacker tunes a multiplicative *exposure* ``E`` and an
additive perturbation ``N``,

    x_adv = clip(E ⊙ x_c + N, 0, 1),   ||E - 1||_inf <= eps_e,   ||N||_inf <= eps_n,

and, with ``mask_bound > 0``, refines the mask itself within ``|M - M_0| <= mask_bound`` of the natural cloud.
The objective is the victim's task loss (cross-entropy for classifiers, BCE on the saliency map for SOD).

Optimisation runs on the min-max engine (:mod:`advbench.minmax`) with one domain per cloud sample: ``clouds=1``
is plain PGD (signed steps of ``2.5 · eps / steps`` per variable); ``clouds=K, mode="minmax"`` learns
simplex weights over K cloud samples (the perturbation must work under every cloud, the hardest weighted
most); ``mode="avg"`` fixes the weights to 1/K (expectation over clouds, EOT).

The exposure is a smooth brightness map (one channel on a coarse grid, bilinearly upsampled; see
:class:`CloudBudget`).  The variables are packed in one flat vector per sample (:class:`Layout`): the coarse
``E - 1``, then ``N``, then the mask offset ``D``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advbench.attack import Attack, AttackContext, RawResult, register_attack
from advbench.errors import ConfigError, InputError
from advbench.minmax import APGDA
from advbench.threat import parse_eps

#: What the attack maximises: per-sample loss of a batch of adversarial images (B,) -> higher is better.
TaskLoss = Callable[[torch.Tensor], torch.Tensor]
#: Whether the attack already succeeds, per sample (B,) bool.
TaskSuccess = Callable[[torch.Tensor], torch.Tensor]

MODES = ("minmax", "avg")


@dataclass(frozen=True)
class CloudBudget:
    """The two budgets of the attack, the mask refinement bound (all >= 0) and the exposure resolution.

    The exposure is a brightness change: one channel, defined on an ``exposure_grid`` x ``exposure_grid``
    grid and bilinearly upsampled (so ``|E - 1|`` stays within ``eps_e`` everywhere); ``exposure_grid=None``
    makes it per pixel.
    """

    eps_e: float = 0.2
    eps_n: float = 8 / 255
    mask_bound: float = 0.0
    exposure_grid: int | None = 8

    def __post_init__(self) -> None:
        for name in ("eps_e", "eps_n", "mask_bound"):
            if isinstance(getattr(self, name), str):  # fractions such as "8/255"
                object.__setattr__(self, name, parse_eps(getattr(self, name)))
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"{name} must be a number >= 0 (a budget), got {value!r}")
        if self.eps_e >= 1:
            raise ConfigError(f"eps_e must be < 1 (the exposure E stays positive), got {self.eps_e}")
        grid = self.exposure_grid
        if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
            raise ConfigError(f"exposure_grid must be a positive integer or None (per pixel), got {grid!r}")


@dataclass(frozen=True)
class Layout:
    """Where exposure, noise and mask offset sit in the flat per-sample variable vector ``(B, P)``."""

    channels: int
    height: int
    width: int
    grid: tuple[int, int]

    @classmethod
    def of(cls, x: torch.Tensor, budget: CloudBudget) -> Layout:
        _, c, h, w = x.shape
        g = (h, w) if budget.exposure_grid is None else (min(budget.exposure_grid, h), min(budget.exposure_grid, w))
        return cls(c, h, w, g)

    @property
    def sizes(self) -> tuple[int, int, int]:
        return self.grid[0] * self.grid[1], self.channels * self.height * self.width, self.height * self.width

    def zeros(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(batch, sum(self.sizes))

    def unpack(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(E - 1)`` at full resolution (B,1,H,W), ``N`` (B,C,H,W) and the mask offset ``D`` (B,1,H,W)."""
        b = delta.shape[0]
        e, n, d = delta.split(self.sizes, dim=1)
        e = e.reshape(b, 1, *self.grid)
        if self.grid != (self.height, self.width):
            e = F.interpolate(e, size=(self.height, self.width), mode="bilinear", align_corners=True)
        return e, n.reshape(b, self.channels, self.height, self.width), d.reshape(b, 1, self.height, self.width)

    def project(self, delta: torch.Tensor, budget: CloudBudget) -> torch.Tensor:
        """Clip each variable to its box (bilinear upsampling keeps the exposure's box)."""
        e, n, d = delta.split(self.sizes, dim=1)
        return torch.cat([e.clamp(-budget.eps_e, budget.eps_e), n.clamp(-budget.eps_n, budget.eps_n),
                          d.clamp(-budget.mask_bound, budget.mask_bound)], dim=1)

    def scales(self, delta: torch.Tensor, budget: CloudBudget) -> torch.Tensor:
        """Per-coordinate step scale: each variable moves in proportion to its own budget."""
        parts = [delta.new_full((k,), v) for k, v in zip(self.sizes, (budget.eps_e, budget.eps_n, budget.mask_bound),
                                                          strict=True)]
        return torch.cat(parts).unsqueeze(0)


def cloud_colour(colour: tuple[float, ...] | list[float], channels: int, like: torch.Tensor) -> torch.Tensor:
    """The cloud colour as a (C,) tensor for ``channels``-channel images (an RGB colour on 1-channel images
    becomes its BT.601 grey); the rules are :mod:`advbench.attacks.clouds`' own."""
    from advbench.attacks.clouds import colour_tensor

    return colour_tensor(colour, like.new_zeros(1, channels, 1, 1)).view(channels)


def compose(x: torch.Tensor, masks: torch.Tensor, colour: torch.Tensor, delta: torch.Tensor,
            layout: Layout) -> torch.Tensor:
    """``clip(E ⊙ (x (1 - M) + c M) + N)`` for every cloud sample: x (B,C,H,W), masks (B,K,1,H,W) -> (B,K,C,H,W)."""
    e, n, d = layout.unpack(delta)
    mask = (masks + d[:, None]).clamp(0, 1)
    cloudy = x[:, None] * (1 - mask) + colour.view(1, 1, -1, 1, 1) * mask
    return ((1 + e[:, None]) * cloudy + n[:, None]).clamp(0, 1)


def within_budget(x: torch.Tensor, masks: torch.Tensor, colour: torch.Tensor, delta: torch.Tensor,
                  x_adv: torch.Tensor, budget: CloudBudget, atol: float = 1e-5) -> torch.Tensor:
    """Per sample: the variables respect both budgets (and the mask bound) and ``x_adv`` is what they compose
    under the first cloud sample."""
    tol = 1e-6
    layout = Layout.of(x, budget)
    e, n, d = layout.unpack(delta)
    ok_e = e.flatten(1).abs().amax(dim=1) <= budget.eps_e + tol
    ok_n = n.flatten(1).abs().amax(dim=1) <= budget.eps_n + tol
    ok_d = d.flatten(1).abs().amax(dim=1) <= budget.mask_bound + tol
    same = (compose(x, masks[:, :1], colour, delta, layout)[:, 0] - x_adv).flatten(1).abs().amax(dim=1) <= atol
    return ok_e & ok_n & ok_d & same & (x_adv.flatten(1).amin(dim=1) >= 0) & (x_adv.flatten(1).amax(dim=1) <= 1)


class _CloudDomains:
    """One domain per cloud sample; losses are the negated task losses (the engine minimises)."""

    def __init__(self, x: torch.Tensor, masks: torch.Tensor, colour: torch.Tensor, loss: TaskLoss,
                 success: TaskSuccess, layout: Layout) -> None:
        self.x, self.masks, self.colour, self.loss, self.success = x, masks, colour, loss, success
        self.layout = layout
        self.names = [f"cloud{k}" for k in range(masks.shape[1])]

    def evaluate(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k = self.masks.shape[:2]
        x_adv = compose(self.x, self.masks, self.colour, delta, self.layout).flatten(0, 1)
        values = self.loss(x_adv)
        with torch.no_grad():
            won = self.success(x_adv.detach())
        return -values.view(b, k), won.view(b, k)


@dataclass
class CloudAttackResult:
    """The packed variables, the adversarial images under the first cloud, and the engine's report."""

    delta: torch.Tensor
    x_adv: torch.Tensor
    x_cloudy: torch.Tensor
    weights: torch.Tensor
    success: torch.Tensor  # (B, K) per cloud sample
    gradient_calls: int


def run_adv_cloud(x: torch.Tensor, masks: torch.Tensor, loss: TaskLoss, success: TaskSuccess, *,
                  budget: CloudBudget, colour: tuple[float, float, float] = (1.0, 1.0, 1.0), steps: int = 20,
                  mode: str = "minmax", beta: float = 10.0, gamma: float = 1.0,
                  early_stop: bool = False) -> CloudAttackResult:
    """Optimise exposure, noise (and the mask offset) against ``loss`` over the K cloud samples in ``masks``."""
    if x.dim() != 4:
        raise InputError(f"adv-cloud needs an image batch (B, C, H, W), got {tuple(x.shape)}")
    if masks.dim() != 5 or masks.shape[0] != x.shape[0] or masks.shape[2] != 1 or masks.shape[-2:] != x.shape[-2:]:
        raise InputError(f"cloud masks must be (B, K, 1, H, W) matching images {tuple(x.shape)}, got "
                         f"{tuple(masks.shape)}")
    masks = masks.to(x)
    if mode not in MODES:
        raise ConfigError(f"adv-cloud mode must be one of {', '.join(MODES)}, got '{mode}'")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    c = cloud_colour(colour, x.shape[1], x)
    layout = Layout.of(x, budget)
    domains = _CloudDomains(x, masks, c, loss, success, layout)
    engine = APGDA(steps=steps, alpha=steps / 2.5, beta=beta, gamma=gamma, fixed_weights=mode == "avg",
                   early_stop=early_stop)
    start = layout.zeros(x.shape[0], x)

    def direction(grad: torch.Tensor) -> torch.Tensor:
        return grad.sign() * layout.scales(grad, budget)

    result = engine.run(domains, start, lambda d: layout.project(d, budget), direction)
    delta = result.delta
    with torch.no_grad():
        x_adv = compose(x, masks[:, :1], c, delta, layout)[:, 0]
        x_cloudy = compose(x, masks[:, :1], c, torch.zeros_like(delta), layout)[:, 0]
    return CloudAttackResult(delta=delta, x_adv=x_adv, x_cloudy=x_cloudy, weights=result.weights,
                             success=result.success, gradient_calls=result.gradient_calls)


@register_attack("adv-cloud")
class AdvCloud(Attack):
    """The adversarial cloud attack on a classifier (see the module docstring).

    ``eps`` is the additive budget ``eps_n`` (linf); ``eps_e`` bounds the exposure, ``mask_bound`` the mask
    refinement.  ``clouds`` cloud samples are drawn from the call's generator with ``coverage``,
    ``thickness`` and ``colour``; ``mode`` is ``"minmax"`` (learned weights over clouds) or ``"avg"``
    (expectation over clouds).  Success is judged under the first cloud sample, which is what ``x_adv`` shows;
    targeted mode pulls towards the target class.  With early stop, samples already misclassified come back
    unchanged (no cloud).
    """

    norms = ("linf",)

    def __init__(self, *, eps_e: float = 0.2, mask_bound: float = 0.0, exposure_grid: int | None = 8,
                 steps: int = 20, clouds: int = 1,
                 coverage: float = 0.4, thickness: float = 0.7, colour: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 mode: str = "minmax", beta: float = 10.0, gamma: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        from advbench.attacks.clouds import CloudSpec

        self.budget = CloudBudget(eps_e=eps_e, eps_n=self.eps, mask_bound=mask_bound, exposure_grid=exposure_grid)
        self.eps_e, self.mask_bound, self.exposure_grid = self.budget.eps_e, self.budget.mask_bound, exposure_grid
        if isinstance(clouds, bool) or not isinstance(clouds, int) or clouds < 1:
            raise ConfigError(f"clouds (cloud samples) must be a positive integer, got {clouds!r}")
        if mode not in MODES:
            raise ConfigError(f"adv-cloud mode must be one of {', '.join(MODES)}, got '{mode}'")
        self.cloud_spec = CloudSpec(coverage=float(coverage), thickness=float(thickness), colour=tuple(colour))
        self.steps, self.clouds, self.mode, self.beta, self.gamma = int(steps), clouds, mode, beta, gamma
        self.coverage, self.thickness, self.colour = float(coverage), float(thickness), list(self.cloud_spec.colour)

    def sample_masks(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``clouds`` natural cloud masks per image, (B, K, 1, H, W)."""
        from advbench.attacks.clouds import sample_clouds

        b, _, h, w = x.shape
        masks = sample_clouds(self.cloud_spec, b * self.clouds, h, w, generator)
        return masks.view(b, self.clouds, 1, h, w).to(x)

    def perturb(self, x: torch.Tensor, masks: torch.Tensor, loss: TaskLoss, success: TaskSuccess) -> CloudAttackResult:
        """Run the attack on any task given its per-sample loss and success test (used for SOD models)."""
        return run_adv_cloud(x, masks, loss, success, budget=self.budget, colour=self.cloud_spec.colour,
                             steps=self.steps, mode=self.mode, beta=self.beta, gamma=self.gamma,
                             early_stop=self.early_stop)

    def _attack(self, ctx: AttackContext, x: torch.Tensor) -> RawResult:
        masks = self.sample_masks(x, ctx.generator)
        clean_logits = ctx.logits(x)
        pred = clean_logits.argmax(dim=1)
        done = ctx.is_success(clean_logits) if self.early_stop else torch.zeros_like(ctx.labels, dtype=torch.bool)
        todo = (~done).nonzero().squeeze(1)
        layout = Layout.of(x, self.budget)
        delta = layout.zeros(x.shape[0], x)
        x_adv, x_cloudy = x.clone(), x.clone()
        weights = x.new_full((x.shape[0], self.clouds), 1.0 / self.clouds)
        if todo.numel():
            labels = ctx.labels[todo].repeat_interleave(self.clouds)
            sign = -1.0 if self.targeted else 1.0  # targeted: pull towards the target class

            def loss(z: torch.Tensor) -> torch.Tensor:
                ctx.n_queries[todo] += self.clouds
                return sign * F.cross_entropy(ctx.model(z), labels, reduction="none")

            def success(z: torch.Tensor) -> torch.Tensor:
                pred = ctx.model(z).argmax(dim=1)
                return pred == labels if self.targeted else pred != labels

            result = self.perturb(x[todo], masks[todo], loss, success)
            ctx.n_gradients[todo] += result.gradient_calls
            x_adv[todo], x_cloudy[todo], delta[todo], weights[todo] = (result.x_adv, result.x_cloudy, result.delta,
                                                                      result.weights)
            pred[todo] = ctx.logits(x_adv[todo], todo).argmax(dim=1)
        return RawResult(x_adv=x_adv, adv_pred=pred, weights=weights,
                         extras={"delta": delta, "masks": masks, "x_cloudy": x_cloudy, "unchanged": done})

    def within_budget(self, x_adv: torch.Tensor, x: torch.Tensor, extras: dict) -> torch.Tensor:
        """The cloud model's budgets hold (samples that were already adversarial come back unchanged)."""
        colour = cloud_colour(self.cloud_spec.colour, x.shape[1], x)
        inside = within_budget(x, extras["masks"], colour, extras["delta"], x_adv, self.budget)
        unchanged = extras["unchanged"] & (x_adv == x).flatten(1).all(dim=1)
        return inside | unchanged
