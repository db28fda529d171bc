"""ADMM weight pruning with masked retraining, and the magnitude-pruning baseline.

Zhang et al., "A Systematic DNN Weight Pruning Framework using Alternating Direction Method of
Multipliers", ECCV 2018 (StructADMM and progressive ADMM extend it).  Minimise the loss subject to each
layer's weights lying in a sparsity set S_l; each round has three steps (Zhang et al., ECCV 2018):

1. W-step: epochs of Adam on ``loss + (rho/2) sum_l ||W_l - Z_l + U_l||^2`` (the squared penalty);
2. Z-step: ``Z_l = proj_S(W_l + U_l)``;
3. U-step: ``U_l += W_l - Z_l``.

Start with ``Z = proj_S(W_pretrained)`` and ``U = 0``; rho starts at 1e-3 and grows by 1.3 per round (the
published PyTorch schedule).  Then the weights are hard-pruned to the mask and retrained with the mask
fixed, so pruned weights stay exactly zero.  With ``adversarial`` the W-step and the retraining run on
PGD examples (Ye et al., "Adversarial Robustness vs. Model Compression, or Both?", ICCV 2019).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advbench.compression.projections import project_sparse, quantize, sparsity_mask
from advbench.compression.structures import create_structure
from advbench.compression.targets import prunable_layers, short_name
from advbench.devices import module_device
from advbench.errors import ConfigError


@dataclass(frozen=True)
class PruneConfig:
    """Hyperparameters of one pruning run (stored in the child checkpoint's sidecar)."""

    method: str = "admm"
    structure: str = "unstructured"
    #: The structure's parameters (block_rows/block_cols, library_size/entries, n/m; see create_structure).
    structure_options: dict[str, Any] = field(default_factory=dict)
    rounds: int = 10
    epochs_per_round: int = 1
    rho: float = 1e-3
    rho_growth: float = 1.3
    retrain_epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    quantize_bits: int | None = None
    adversarial: bool = False
    adv_eps: float = 0.1
    adv_steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("admm", "magnitude"):
            raise ConfigError(f"--method must be admm or magnitude, got '{self.method}'")
        if self.rounds < 1 or self.epochs_per_round < 1 or self.retrain_epochs < 0:
            raise ConfigError("rounds and epochs per round must be >= 1 and retrain epochs >= 0")
        if self.rho <= 0 or self.rho_growth < 1:
            raise ConfigError(f"rho must be > 0 and its growth >= 1; got {self.rho}, {self.rho_growth}")
        create_structure(self.structure, **self.structure_options)  # unknown structures and parameters fail here


@dataclass
class PruneReport:
    masks: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    quantization: dict[str, Any] = field(default_factory=dict)
    #: The structure as pruned with: its name and parameters (a pattern library learned from the dense weights).
    structure: dict[str, Any] = field(default_factory=dict)


def _attack(cfg: PruneConfig):
    if not cfg.adversarial:
        return None
    from advbench.defenses.adversarial_training import pgd_training_attack

    return pgd_training_attack(eps=cfg.adv_eps, steps=cfg.adv_steps)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place (and the biases of pruned filters)."""
    layers = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            layer = layers[name]
            layer.weight.mul_(mask)
            if layer.bias is not None and mask.ndim >= 2 and layer.bias.shape[0] == mask.shape[0]:
                alive = mask.flatten(1).any(dim=1)
                if not bool(alive.all()):  # a filter pruned whole: its bias goes too
                    layer.bias.mul_(alive.to(layer.bias.dtype))


def masked_retrain(model: nn.Module, data, masks: dict[str, torch.Tensor], cfg: PruneConfig,
                   generator: torch.Generator, progress: bool = True,
                   attack_generator: torch.Generator | None = None) -> None:
    """Retrain with the masks fixed: the mask is re-applied after every step, so zeros stay exactly zero."""
    from advbench.training import fit

    apply_masks(model, masks)
    if cfg.retrain_epochs:
        fit(model, data, epochs=cfg.retrain_epochs, lr=cfg.lr, batch_size=cfg.batch_size, generator=generator,
            attack=_attack(cfg), attack_generator=attack_generator, after_step=lambda: apply_masks(model, masks),
            desc="masked retrain", progress=progress)


def admm_prune(model: nn.Module, data, targets: dict[str, float], cfg: PruneConfig,
               progress: bool = True) -> PruneReport:
    """ADMM (or magnitude) pruning of ``model`` in place to ``targets``; returns the masks and history."""
    from advbench.training import accuracy, fit

    layers = prunable_layers(model)
    generator = torch.Generator().manual_seed(cfg.seed)
    # off the CPU the adversarial steps draw from one device stream that runs on across rounds (on the CPU they
    # share ``generator``, as always), instead of fit() reseeding a fresh one at every round
    dev = module_device(model)
    attack_gen = generator if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    shape = create_structure(cfg.structure, **cfg.structure_options).prepared(
        {name: layers[name].weight.detach() for name in targets})
    if cfg.method == "admm":
        weights = {name: layers[name].weight for name in targets}
        z = {name: project_sparse(w.detach(), targets[name], shape) for name, w in weights.items()}
        u = {name: torch.zeros_like(w) for name, w in weights.items()}
        rho = cfg.rho
        optimiser = None
        for round_index in range(cfg.rounds):

            def penalty(rho=rho):
                return (rho / 2) * sum((weights[n] - z[n] + u[n]).square().sum() for n in weights)

            optimiser = fit(model, data, epochs=cfg.epochs_per_round, lr=cfg.lr, batch_size=cfg.batch_size,
                            generator=generator, attack=_attack(cfg), attack_generator=attack_gen, penalty=penalty,
                            optimiser=optimiser,
                            desc=f"admm round {round_index + 1}/{cfg.rounds}", progress=progress)
            with torch.no_grad():
                for name, w in weights.items():
                    z[name] = project_sparse(w + u[name], targets[name], shape)
                    u[name] += w - z[name]
                gap = sum(float((weights[n] - z[n]).norm()) for n in weights)
            history.append({"round": round_index + 1, "rho": rho, "w_minus_z": gap,
                            "test_accuracy": accuracy(model, data.x_test, data.y_test)})
            rho *= cfg.rho_growth
    masks = {name: sparsity_mask(layers[name].weight.detach(), ratio, shape) for name, ratio in targets.items()}
    masked_retrain(model, data, masks, cfg, generator, progress, attack_generator=attack_gen)
    report = PruneReport(masks=masks, history=history, structure={"name": shape.name, **shape.parameters()})
    if cfg.quantize_bits:
        with torch.no_grad():
            for name in targets:
                quantized, q = quantize(layers[name].weight, cfg.quantize_bits)
                layers[name].weight.copy_(quantized)
                report.quantization[short_name(name)] = {"bits": cfg.quantize_bits, "scale": q}
    return report


def compression_stats(model: nn.Module) -> dict[str, Any]:
    """Per-layer sparsity of the Conv2d/Linear weights and the compression ratio (total / non-zero),
    counted from the tensors."""
    per_layer, total, nonzero = {}, 0, 0
    for name, layer in prunable_layers(model).items():
        w = layer.weight.detach()
        nz = int((w != 0).sum())
        per_layer[short_name(name)] = {"shape": list(w.shape), "params": w.numel(), "nonzero": nz,
                                       "sparsity": 1 - nz / w.numel()}
        total += w.numel()
        nonzero += nz
    return {"per_layer": per_layer, "weights": total, "nonzero": nonzero,
            "compression_ratio": total / max(1, nonzero), "sparsity": 1 - nonzero / max(1, total)}
