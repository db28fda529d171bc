"""DefenseNet: a learnable preprocessing module in front of a frozen, deployed model.

Sun, Fu, Li et al., "Adversarial Cloud Attack and DefenseNet" (arXiv 2306.17431), reconstructed from
the paper's description.  ``g`` is a residual U-Net (identity at initialisation) whose output is clipped to [0, 1];
the victim ``f`` never changes.  Training minimises, over clean, cloudy and adversarial-cloud inputs ``x_in``
built from the clean image ``x``,

    L_task(f(g(x_in)), y) + lam · ||g(x_in) - x||_1,

where the adversarial inputs are crafted against the *defended* pipeline ``f ∘ g`` as it is at that step (so
the module learns to undo attacks that know about it), with the adversarial cloud attack and, optionally,
plain linf PGD ("regular" adversarial examples).

>>> net = DefenseNet(channels=1, base=4, depth=1)
>>> x = torch.rand(2, 1, 8, 8)
>>> bool(torch.equal(net(x), x))  # a fresh DefenseNet is the identity
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advbench.checkpoints import file_sha256, read_checkpoint, save_checkpoint
from advbench.defenses.registry import DEFENSES
from advbench.errors import CheckpointError, ConfigError, InputError
from advbench.models.unet import UNet
from advbench.objectives import Objective
from advbench.progress import progress_bar, step_ticks

INPUT_KINDS = ("clean", "cloudy", "adv-cloud", "pgd")
#: The input kinds crafted by an attack (``DefenseTrainConfig.attack_steps`` steps each).
ATTACK_INPUTS = ("adv-cloud", "pgd")


class DefenseNet(nn.Module):
    """``g(x) = clip(x + f(x), 0, 1)`` with ``f`` a U-Net of ``depth`` levels and ``base`` channels."""

    name = "defensenet"
    differentiable = True
    bpda = False

    def __init__(self, channels: int = 3, base: int = 4, depth: int = 2,
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.net = UNet(channels, channels, base=base, depth=depth, residual=True)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.params: dict[str, Any] = {"channels": channels, "base": base, "depth": depth}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise InputError(f"DefenseNet was trained for inputs of shape {self.input_shape}, got "
                             f"{tuple(x.shape[1:])}; train one for this data set")
        return self.net(x).clamp(0, 1)


@dataclass
class DefenseTrainConfig:
    """Hyperparameters of :func:`train_defensenet` (budgets as in the cloud attack)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    lam: float = 1.0
    inputs: tuple[str, ...] = ("clean", "cloudy", "adv-cloud", "pgd")
    eps_e: float = 0.2
    eps_n: float = 8 / 255
    attack_steps: int = 5
    coverage: float = 0.4
    thickness: float = 0.7
    base: int = 4  # small enough that DefenseNet + victim costs <= 1.3x the victim (bench_defensenet_latency)
    depth: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        unknown = [k for k in self.inputs if k not in INPUT_KINDS]
        if unknown or not self.inputs:
            raise ConfigError(f"inputs must be a non-empty subset of {', '.join(INPUT_KINDS)}, got {self.inputs}")
        if self.lam < 0:
            raise ConfigError(f"lam (the L1 reconstruction weight) must be >= 0, got {self.lam}")
        for name in ("epochs", "batch_size", "attack_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def training_inputs(kind: str, pipeline: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Objective,
                    cfg: DefenseTrainConfig, gen: torch.Generator,
                    tick: Callable[[], None] | None = None) -> torch.Tensor:
    """One training input batch of the given ``kind`` (one of ``INPUT_KINDS``), built from the clean batch ``x``;
    the attacks are crafted against ``pipeline`` with ``cfg``'s budgets, clouds and steps.  ``tick`` (optional)
    is called at every evaluation of the attack's loss, i.e. once per attack step (and once at its start)."""
    from advbench.attacks.adv_cloud import CloudBudget, run_adv_cloud
    from advbench.attacks.clouds import CloudSpec, cloudify, sample_clouds

    if kind == "clean":
        return x
    b, _, h, w = x.shape
    spec = CloudSpec(coverage=cfg.coverage, thickness=cfg.thickness)
    masks = sample_clouds(spec, b, h, w, gen).to(x)[:, None]
    if kind == "cloudy":
        return cloudify(x, masks[:, 0], spec.colour)
    if kind == "pgd":  # regular linf PGD: no cloud, no exposure
        masks, budget = torch.zeros_like(masks), CloudBudget(eps_e=0.0, eps_n=cfg.eps_n)
    else:
        budget = CloudBudget(eps_e=cfg.eps_e, eps_n=cfg.eps_n)

    def loss(x_adv: torch.Tensor) -> torch.Tensor:
        if tick is not None:
            tick()
        return task.loss(pipeline(x_adv), y)

    def success(x_adv: torch.Tensor) -> torch.Tensor:
        return task.success(pipeline(x_adv), y)

    return run_adv_cloud(x, masks, loss, success, budget=budget, steps=cfg.attack_steps).x_adv


def train_defensenet(victim: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, task: Objective,
                     cfg: DefenseTrainConfig, *, progress: bool = True) -> tuple[DefenseNet, dict[str, Any]]:
    """Train a DefenseNet in front of ``victim``, whose weights are left bit-identical (they are frozen)."""
    if x_train.dim() != 4 or x_train.shape[0] != y_train.shape[0]:
        raise InputError(f"x_train must be (N, C, H, W) with one target per image; got {tuple(x_train.shape)} and "
                         f"{tuple(y_train.shape)}")
    expected = getattr(victim, "input_shape", None)
    if expected is not None and tuple(expected) != tuple(x_train.shape[1:]):
        raise InputError(f"the victim expects inputs of shape {tuple(expected)} but the data is "
                         f"{tuple(x_train.shape[1:])}; pick the data set the victim was trained on")
    with torch.random.fork_rng(devices=[]):  # layer init draws from the global generator: seed it, then restore
        torch.manual_seed(cfg.seed)
        net = DefenseNet(x_train.shape[1], cfg.base, cfg.depth, input_shape=x_train.shape[1:]).to(x_train.device)
    frozen = [p.requires_grad for p in victim.parameters()]
    was_training = victim.training
    victim.eval()
    for p in victim.parameters():
        p.requires_grad_(False)

    class _Pipeline(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return victim(net(x))

    pipeline = _Pipeline()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = x_train.shape[0]
    steps = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    history: list[float] = []
    # The bar counts steps: every attack step that crafts an adversarial input (most of the cost) and every
    # optimiser update, so it moves within a batch and a single batch is no single-step bar.
    attack_steps = {kind: cfg.attack_steps if kind in ATTACK_INPUTS else 0 for kind in cfg.inputs}
    bar = progress_bar(total=steps * (sum(attack_steps.values()) + 1), desc="train defensenet", unit="step",
                       enabled=progress)
    try:
        for epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                x, y = x_train[idx], y_train[idx]
                net.eval()  # attacks see the current module without updating its statistics
                inputs = []
                for kind in cfg.inputs:
                    bar.set_postfix(epoch=epoch + 1, input=kind, refresh=False)
                    with step_ticks(bar, attack_steps[kind]) as tick:
                        inputs.append(training_inputs(kind, pipeline, x, y, task, cfg, gen, tick=tick).detach())
                net.train()
                loss = x.new_zeros(())
                for x_in in inputs:
                    cleaned = net(x_in)
                    loss = loss + task.loss(victim(cleaned), y).mean() + cfg.lam * (cleaned - x).abs().mean()
                loss = loss / len(inputs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                history.append(loss.item())
                bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.3f}", refresh=False)
                bar.update(1)
    finally:
        bar.close()
        for p, flag in zip(victim.parameters(), frozen, strict=True):
            p.requires_grad_(flag)
        victim.train(was_training)
    net.eval()
    return net, {"config": asdict(cfg), "steps": steps, "first_loss": history[0], "final_loss": history[-1]}


def save_defensenet(net: DefenseNet, path: str | Path, *, victim_checkpoint: str | Path | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``net`` with the metadata :func:`load_defensenet` needs (and the victim's hash, if given)."""
    meta: dict[str, Any] = {"task": "defense", "arch": "defensenet", **net.params,
                            "input_shape": list(net.input_shape or ())}
    if victim_checkpoint is not None:
        meta["victim"] = {"checkpoint": str(victim_checkpoint), "sha256": file_sha256(victim_checkpoint)}
    return save_checkpoint(net, path, {**meta, **(extra or {})})


@DEFENSES.register("defensenet")
def load_defensenet(path: str | Path) -> DefenseNet:
    """Load a DefenseNet checkpoint (safetensors, no pickled code) written by :func:`save_defensenet`."""
    state, meta = read_checkpoint(path)
    if meta.get("arch") != "defensenet":
        raise CheckpointError(f"{path} is not a DefenseNet checkpoint (arch {meta.get('arch')!r}); train one with "
                              "`advbench defend train`")
    net = DefenseNet(int(meta["channels"]), int(meta["base"]), int(meta["depth"]),
                     input_shape=meta.get("input_shape") or None)
    net.load_state_dict(state)
    net.params = {"checkpoint": str(path), "sha256": file_sha256(path), **net.params}
    return net.eval()
