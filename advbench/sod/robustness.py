"""Robustness of a salient-object-detection model to clouds and adversarial clouds, with or without a defense.

The evaluation protocol of the DefenseNet study (Sun, Fu, Li et al., arXiv 2306.17431) as
rows of SOD metrics (MAE, F-, S- and E-measure, :mod:`advbench.sod.metrics`):

* ``clean``, ``cloudy`` (a natural cloud from :mod:`advbench.attacks.clouds`) and ``adv-cloud`` (the attack of
  :mod:`advbench.attacks.adv_cloud` on that cloud) and ``pgd`` (linf, no cloud), white-box on the victim;
* the same four through the defense, the attacks white-box *through* it (DefenseNet is differentiable;
  input transforms use BPDA);
* black-box rows: the ``adv-cloud`` and ``pgd`` images crafted on the undefended victim, fed to the defended
  pipeline (transfer).

Every row uses the same clouds (one per image, from the seeded generator), so rows differ only in what is
being measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from advbench.attacks.adv_cloud import CloudBudget, run_adv_cloud
from advbench.attacks.clouds import CloudSpec, cloudify, sample_clouds
from advbench.errors import ConfigError
from advbench.objectives import SOD
from advbench.progress import progress_bar, step_ticks
from advbench.sod.metrics import sod_metrics

#: The attacks an SOD robustness run can include.
SOD_ATTACKS = ("adv-cloud", "pgd")


@dataclass(frozen=True)
class CloudAttackConfig:
    """Budgets and cloud knobs of the robustness rows (``steps`` for adv-cloud, ``pgd_steps`` for pgd)."""

    eps_e: float = 0.2
    eps_n: float = 8 / 255
    mask_bound: float = 0.0
    steps: int = 20
    clouds: int = 1
    mode: str = "minmax"
    pgd_steps: int = 20
    coverage: float = 0.4
    thickness: float = 0.7

    def budget(self) -> CloudBudget:
        return CloudBudget(eps_e=self.eps_e, eps_n=self.eps_n, mask_bound=self.mask_bound)


def predict_saliency(model: nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).sigmoid() for i in range(0, x.shape[0], batch)])


#: Images per attack batch.
ATTACK_BATCH = 64


def attack_sod_batch(model: nn.Module, x: torch.Tensor, gt: torch.Tensor, masks: torch.Tensor, cfg: CloudAttackConfig,
            budget: CloudBudget, *, bar: Any, batch: int = ATTACK_BATCH) -> torch.Tensor:
    """The attacked images, in batches; ``bar`` advances by one per attack step on a batch (``cfg.steps`` each)."""
    out = []
    for i in range(0, x.shape[0], batch):
        xb, gb, mb = x[i:i + batch], gt[i:i + batch], masks[i:i + batch]
        rep = mb.shape[1]
        with step_ticks(bar, cfg.steps) as tick:
            def loss(x_adv: torch.Tensor, gb: torch.Tensor = gb, rep: int = rep, tick: Any = tick) -> torch.Tensor:
                tick()  # the engine evaluates the loss once per step (plus once at the start: capped)
                return SOD.loss(model(x_adv), gb.repeat_interleave(rep, dim=0))

            def success(x_adv: torch.Tensor, gb: torch.Tensor = gb, rep: int = rep) -> torch.Tensor:
                return SOD.success(model(x_adv), gb.repeat_interleave(rep, dim=0))

            result = run_adv_cloud(xb, mb, loss, success, budget=budget, steps=cfg.steps, mode=cfg.mode)
        out.append(result.x_adv)
    return torch.cat(out)


def sod_robustness(victim: nn.Module, x: torch.Tensor, gt: torch.Tensor, *, defense: nn.Module | None = None,
                   cfg: CloudAttackConfig = CloudAttackConfig(), attacks: Sequence[str] = SOD_ATTACKS,
                   seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """The rows of the module docstring for the requested ``attacks`` (``adv-cloud``, ``pgd``):
    ``{"rows": {name: metrics}, "cost": {...}}``.  The models' train/eval modes are restored afterwards.
    ``progress`` shows a bar on stderr counting attack steps on batches over every attacked row."""
    unknown = [a for a in attacks if a not in SOD_ATTACKS]
    if unknown:
        raise ConfigError(f"SOD robustness rows exist for {', '.join(SOD_ATTACKS)}, not {', '.join(unknown)}")
    modes = [(m, m.training) for m in (victim, defense) if m is not None]
    try:
        return _rows(victim, x, gt, defense, cfg, list(attacks), seed, progress)
    finally:
        for module, training in modes:
            module.train(training)


def _rows(victim: nn.Module, x: torch.Tensor, gt: torch.Tensor, defense: nn.Module | None, cfg: CloudAttackConfig,
          attacks: list[str], seed: int, progress: bool) -> dict[str, Any]:
    victim.eval()
    gen = torch.Generator().manual_seed(seed)
    spec = CloudSpec(coverage=cfg.coverage, thickness=cfg.thickness)
    b, _, h, w = x.shape
    masks = sample_clouds(spec, b * cfg.clouds, h, w, gen).to(x).view(b, cfg.clouds, 1, h, w)
    cloudy = cloudify(x, masks[:, 0], spec.colour)
    no_cloud = torch.zeros_like(masks[:, :1])
    pgd_cfg = replace(cfg, steps=cfg.pgd_steps)
    budgets = {"adv-cloud": (masks, cfg, cfg.budget()), "pgd": (no_cloud, pgd_cfg, CloudBudget(eps_e=0.0,
                                                                                              eps_n=cfg.eps_n))}
    rows: dict[str, dict[str, float]] = {}

    def score(name: str, model: nn.Module, images: torch.Tensor) -> None:
        rows[name] = sod_metrics(predict_saliency(model, images), gt)

    passes = 2 if defense is not None else 1  # on the victim, then white-box through the defense
    total = passes * math.ceil(b / ATTACK_BATCH) * sum(budgets[a][1].steps for a in attacks)
    bar = progress_bar(total=total, desc="sod attacks", unit="step", enabled=progress and total > 0)

    def attack(kind: str, model: nn.Module, row: str) -> torch.Tensor:
        bar.set_postfix(row=row, refresh=False)
        return attack_sod_batch(model, x, gt, *budgets[kind], bar=bar)

    try:
        crafted = {a: attack(a, victim, a) for a in attacks}
        for name, images in (("clean", x), ("cloudy", cloudy), *crafted.items()):
            score(name, victim, images)
        cost: dict[str, Any] = {}
        if defense is not None:
            defense.eval()
            pipeline = nn.Sequential(defense, victim)
            adaptive = {a: attack(a, pipeline, f"defended {a}") for a in attacks}
            for name, images in (("clean", x), ("cloudy", cloudy), *adaptive.items()):
                score(f"defended {name}", pipeline, images)
            for name, images in crafted.items():
                score(f"defended {name} (transfer)", pipeline, images)
            cost = inference_cost(victim, pipeline, x)
    finally:
        bar.close()
    return {"rows": rows, "cost": cost, "n_images": b, "attacks": attacks, "attack": cfg.__dict__,
            "clouds": spec.to_dict()}


def inference_cost(victim: nn.Module, pipeline: nn.Module, x: torch.Tensor, repeats: int = 5) -> dict[str, float]:
    """Median seconds per batch of the victim alone and of defense + victim, and their ratio (on CUDA each
    pass is synchronised, so a time covers the GPU work)."""
    def sync() -> None:
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    def median_time(model: nn.Module) -> float:
        times = []
        with torch.no_grad():
            model(x)
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                model(x)
                sync()
                times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]

    alone, defended = median_time(victim), median_time(pipeline)
    return {"victim_s": alone, "defended_s": defended, "ratio": defended / alone}
