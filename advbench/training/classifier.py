"""Standard and PGD adversarial training of the built-in classifiers.

Adversarial training follows Madry et al. (ICLR 2018): each minibatch is replaced by PGD examples
(random start, ``adv_steps`` steps) found against the current model.  Optimiser: Adam.  The trained
model is saved as safetensors with a JSON sidecar (see :mod:`advbench.checkpoints`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advbench.checkpoints import save_checkpoint
from advbench.devices import module_device
from advbench.errors import ConfigError
from advbench.progress import progress_bar
from advbench.records import device_name, now_iso

#: ``pgd``: Madry et al.; ``gat-*``: several perturbation types (see advbench.defenses.adversarial_training).
ADVERSARIAL_MODES = (None, "pgd", "gat-minmax", "gat-max", "gat-avg")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (stored in the checkpoint sidecar)."""

    arch: str
    dataset: str
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    adversarial: str | None = None
    adv_norm: str = "linf"
    adv_eps: float = 0.1
    adv_steps: int = 10
    augment: bool = False
    gat_types: str = "linf:0.1,l2:1.0"
    gat_gamma: float = 1.0
    gat_beta: float = 10.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.adversarial not in ADVERSARIAL_MODES:
            raise ConfigError(f"adversarial must be one of {', '.join(m for m in ADVERSARIAL_MODES if m)}, "
                              f"got '{self.adversarial}'")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in eval mode (batches move to the model's device)."""
    model.eval()
    dev = module_device(model)
    with torch.no_grad():
        correct = sum(int((model(x[i : i + batch_size].to(dev)).argmax(1) == y[i : i + batch_size].to(dev)).sum())
                      for i in range(0, x.shape[0], batch_size))
    return correct / max(1, x.shape[0])


def fit(
    model: nn.Module,
    data,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    generator: torch.Generator,
    attack=None,
    attack_generator: torch.Generator | None = None,
    pipeline=None,
    penalty: Callable[[], torch.Tensor] | None = None,
    batch_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    after_step: Callable[[], None] | None = None,
    optimiser: torch.optim.Optimizer | None = None,
    desc: str = "train",
    progress: bool = True,
) -> torch.optim.Optimizer:
    """Adam epochs of cross-entropy on ``data.x_train`` (optionally on adversarial examples from ``attack``,
    which draws from ``attack_generator``, and augmented by ``pipeline``), plus ``penalty()`` (e.g. the ADMM
    proximal term); ``batch_loss(model, x, y, generator)`` replaces the cross-entropy (e.g. multi-perturbation
    training); ``after_step`` runs after every optimiser step (e.g. to re-apply a pruning mask).  Batches are
    drawn and augmented on the CPU and moved to the model's device.  Returns the optimiser."""
    from advbench.datasets import augment_batch

    optimiser = optimiser or torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = data.x_train.shape[0]
    steps_per_epoch = (n + batch_size - 1) // batch_size
    dev = module_device(model)
    # ``generator`` orders the minibatches; attacks draw from a generator on the model's device (on the CPU the
    # same one, as always), seeded without consuming ``generator``, so a seed gives the same minibatches anywhere
    # (pass ``attack_generator`` to carry one stream on across several calls, as ADMM's rounds do)
    attack_gen = attack_generator if attack_generator is not None else generator
    if attack_gen.device.type != dev.type:
        attack_gen = torch.Generator(device=dev).manual_seed(generator.initial_seed())
    bar = progress_bar(total=epochs * steps_per_epoch, desc=desc, unit="batch", enabled=progress)
    for _epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            if pipeline is not None:
                xb = augment_batch(xb, pipeline)
            xb, yb = xb.to(dev), yb.to(dev)
            if attack is not None:
                xb = attack(model, xb, yb, generator=attack_gen).x_adv
            model.train()
            loss = F.cross_entropy(model(xb), yb) if batch_loss is None else batch_loss(model, xb, yb, attack_gen)
            if penalty is not None:
                loss = loss + penalty()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if after_step is not None:
                after_step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    return optimiser


def train_classifier(cfg: TrainConfig, *, progress: bool = True,
                     device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Train ``cfg.arch`` on ``cfg.dataset`` on ``device``; returns the model (on ``device``) and its sidecar
    metadata.  The same seed draws the same minibatches on every device; the weights differ by float rounding
    (and, for adversarial training, by the attacks' random starts, which a GPU draws from its own generator)."""
    from advbench.datasets import load_dataset, training_augmentation
    from advbench.defenses.adversarial_training import training_objective
    from advbench.models import create_model

    data = load_dataset(cfg.dataset, seed=cfg.seed)
    mean, std = data.channel_stats()
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):  # layer init uses torch's global generator
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.arch, input_shape=data.input_shape, num_classes=data.num_classes, mean=mean, std=std)
    model = model.to(device)
    attack, batch_loss = training_objective(cfg.adversarial, norm=cfg.adv_norm, eps=cfg.adv_eps, steps=cfg.adv_steps,
                                            gat_types=cfg.gat_types, beta=cfg.gat_beta, gamma=cfg.gat_gamma)
    pipeline = training_augmentation(data, seed=cfg.seed) if cfg.augment else None
    fit(model, data, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
        generator=generator, attack=attack, pipeline=pipeline, batch_loss=batch_loss, desc=f"train {cfg.arch}",
        progress=progress)
    test_acc = accuracy(model, data.x_test, data.y_test)
    meta = {
        "arch": cfg.arch,
        "dataset": cfg.dataset,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "normalization": model.normalization(),
        "training": asdict(cfg),
        "test_accuracy": test_acc,
        "created_at": now_iso(),
    }
    if torch.device(device).type != "cpu":  # only off the CPU, so CPU sidecars keep their fields
        meta["device"] = device_name(device)
    if batch_loss is not None and batch_loss.trace:
        meta["gat_weights"] = dict(zip(batch_loss.names, batch_loss.trace[-1], strict=True))
    return model, meta


def train_and_save(cfg: TrainConfig, out: str | Path, *, progress: bool = True,
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train (on ``device``) and write ``out`` (.safetensors, CPU tensors) plus its sidecar; returns the metadata."""
    if Path(out).suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got '{out}'")
    model, meta = train_classifier(cfg, progress=progress, device=device)
    save_checkpoint(model, out, meta)
    return meta
