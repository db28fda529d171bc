"""ADMM weight pruning with masked retraining, its progressive and reweighted variants, and the magnitude-pruning
baseline.

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

* ``progressive`` (progressive ADMM, Ye et al., 2019): ``stages`` ADMM runs toward ratios that grow
  geometrically in the kept fraction up to the target, each one starting from the last one's weights, with a
  masked retraining after each stage.
* ``reweighted`` (unified reweighted dynamic regularisation, Zhang et al., 2020): instead of ADMM's auxiliary
  variables, each round penalises ``sum_i P_i w_i^2`` over the weights the structure's projection would prune,
  with ``P_i = 1 / (w_i^2 + eps)`` reweighted after each round; the penalty is bounded by the constraint (the
  weights the structure keeps are not penalised), so one rate works for every layer without per-layer tuning.
* the ``nested`` structure (Qin et al., 2021): ADMM toward the densest level, then a retraining whose loss is the
  mean over every level's sub-model (:func:`nested_retrain`), so the sparser levels are trained too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advbench.compression.projections import project_sparse, quantize, sparsity_mask
from advbench.compression.structures import Nested, Structure, create_structure
from advbench.compression.targets import prunable_layers, short_name
from advbench.devices import module_device
from advbench.errors import ConfigError

#: Pruning methods: ADMM, its progressive (multi-step) form, the reweighted regulariser and the magnitude baseline.
METHODS = ("admm", "progressive", "reweighted", "magnitude")

#: Reweighting floor of the reweighted method (P_i = 1 / (w_i^2 + REWEIGHT_EPS)).
REWEIGHT_EPS = 1e-3


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
    #: progressive: the number of ADMM stages toward the target.
    stages: int = 3
    #: ADMM-NN: ADMM rounds toward the quantization levels before the weights are snapped to them (progressive
    #: pruning always does this, from 8 bits down to ``quantize_bits``); off, the weights are snapped directly.
    quantize_admm: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got '{self.method}'")
        if isinstance(self.stages, bool) or not isinstance(self.stages, int) or self.stages < 1:
            raise ConfigError(f"stages (progressive ADMM) must be a positive integer, got {self.stages!r}")
        if self.rounds < 1 or self.epochs_per_round < 1 or self.retrain_epochs < 0:
            raise ConfigError("rounds and epochs per round must be >= 1 and retrain epochs >= 0")
        if self.rho <= 0 or self.rho_growth < 1:
            raise ConfigError(f"rho must be > 0 and its growth >= 1; got {self.rho}, {self.rho_growth}")
        create_structure(self.structure, **self.structure_options)  # unknown structures and parameters fail here


@dataclass
class PruneReport:
    masks: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
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


def nested_retrain(model: nn.Module, data, masks: dict[str, torch.Tensor], levels: tuple[float, ...],
                   cfg: PruneConfig, generator: torch.Generator, progress: bool = True,
                   attack_generator: torch.Generator | None = None) -> None:
    """Masked retraining of a nested model (Qin et al., 2021) with every level trained at once: each step's loss is
    the mean cross-entropy of the sub-models at all levels, each level's weights masked by
    :func:`~advbench.compression.nested.nested_masks` of the current weights (the masks the checkpoint will store,
    so each sparser level is a subset of the denser one and is trained, not only cut from the densest).  The
    densest level's mask is re-applied after every step, as in :func:`masked_retrain`."""
    from advbench.compression.nested import nested_masks
    from advbench.training import fit

    apply_masks(model, masks)
    if not cfg.retrain_epochs:
        return
    modules = dict(model.named_modules())

    def level_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            level_masks = {name: nested_masks(modules[name].weight, levels) for name in masks}
        total = torch.zeros((), device=x.device)
        for k in range(len(levels)):
            weights = {f"{name}.weight": modules[name].weight * level_masks[name][k] for name in masks}
            total = total + F.cross_entropy(torch.func.functional_call(net, weights, (x,)), y)
        return total / len(levels)

    fit(model, data, epochs=cfg.retrain_epochs, lr=cfg.lr, batch_size=cfg.batch_size, generator=generator,
        attack=_attack(cfg), attack_generator=attack_generator, batch_loss=level_loss,
        after_step=lambda: apply_masks(model, masks), desc="nested retrain (every level)", progress=progress)


def admm_prune(model: nn.Module, data, targets: dict[str, float], cfg: PruneConfig,
               progress: bool = True) -> PruneReport:
    """Prune ``model`` in place to ``targets`` with ``cfg.method`` (ADMM, progressive ADMM, the reweighted
    regulariser or magnitude pruning), retrain with the masks fixed, then quantize if asked; returns the masks,
    the history and the structure as pruned."""
    layers = prunable_layers(model)
    generator = torch.Generator().manual_seed(cfg.seed)
    # off the CPU the adversarial steps draw from one device stream that runs on across rounds (on the CPU they
    # share ``generator``, as always), instead of fit() reseeding a fresh one at every round
    dev = module_device(model)
    attack_gen = generator if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(cfg.seed)
    history: list[dict[str, Any]] = []
    shape = create_structure(cfg.structure, **cfg.structure_options).prepared(
        {name: layers[name].weight.detach() for name in targets})
    run = {"admm": _admm_rounds, "progressive": _progressive, "reweighted": _reweighted_rounds}.get(cfg.method)
    if run is not None:
        run(model, data, layers, targets, shape, cfg, generator, attack_gen, history, progress)
    masks = {name: sparsity_mask(layers[name].weight.detach(), ratio, shape) for name, ratio in targets.items()}
    if isinstance(shape, Nested):
        nested_retrain(model, data, masks, shape.levels, cfg, generator, progress, attack_generator=attack_gen)
    else:
        masked_retrain(model, data, masks, cfg, generator, progress, attack_generator=attack_gen)
    report = PruneReport(masks=masks, history=history, structure={"name": shape.name, **shape.parameters()})
    if cfg.quantize_bits and (cfg.quantize_admm or cfg.method == "progressive"):  # ADMM-NN: training learns the levels
        for bits in quantization_schedule(cfg.quantize_bits, progressive=cfg.method == "progressive"):
            _admm_quantize_rounds(model, data, layers, masks, bits, cfg, generator, attack_gen, history, progress)
    if cfg.quantize_bits:
        with torch.no_grad():
            for name in targets:
                quantized, q = quantize(layers[name].weight, cfg.quantize_bits)
                layers[name].weight.copy_(quantized)
                report.quantization[short_name(name)] = {"bits": cfg.quantize_bits, "scale": q}
    return report


def _admm_loop(model: nn.Module, data, weights: dict[str, nn.Parameter], project, cfg: PruneConfig,
               generator: torch.Generator, attack_gen: torch.Generator, history: list[dict[str, Any]],
               progress: bool, desc: str, after_step=None, note: dict[str, Any] | None = None) -> None:
    """``cfg.rounds`` ADMM rounds on ``weights``: W-step (training plus the proximal penalty), Z-step
    ``Z = project(name, W + U)``, U-step ``U += W - Z``; rho grows by ``cfg.rho_growth`` per round.  Each round
    appends its rho, the gap ``sum ||W - Z||``, the test accuracy and ``note`` to ``history``."""
    from advbench.training import accuracy, fit

    z = {name: project(name, w.detach()) for name, w in weights.items()}
    u = {name: torch.zeros_like(w) for name, w in weights.items()}
    rho = cfg.rho
    optimiser = None
    for round_index in range(cfg.rounds):

        def penalty(rho=rho):
            return (rho / 2) * sum((weights[n] - z[n] + u[n]).square().sum() for n in weights)

        optimiser = fit(model, data, epochs=cfg.epochs_per_round, lr=cfg.lr, batch_size=cfg.batch_size,
                        generator=generator, attack=_attack(cfg), attack_generator=attack_gen, penalty=penalty,
                        optimiser=optimiser, after_step=after_step,
                        desc=f"{desc} round {round_index + 1}/{cfg.rounds}", progress=progress)
        with torch.no_grad():
            for name, w in weights.items():
                z[name] = project(name, w + u[name])
                u[name] += w - z[name]
            gap = sum(float((weights[n] - z[n]).norm()) for n in weights)
        history.append({"round": len(history) + 1, **(note or {}), "rho": rho, "w_minus_z": gap,
                        "test_accuracy": accuracy(model, data.x_test, data.y_test)})
        rho *= cfg.rho_growth


def _admm_rounds(model: nn.Module, data, layers: dict[str, nn.Module], targets: dict[str, float], shape: Structure,
                 cfg: PruneConfig, generator: torch.Generator, attack_gen: torch.Generator,
                 history: list[dict[str, Any]], progress: bool, stage: str = "") -> None:
    """ADMM pruning rounds toward ``targets`` (see the module docstring)."""
    weights = {name: layers[name].weight for name in targets}
    _admm_loop(model, data, weights, lambda name, w: project_sparse(w, targets[name], shape), cfg, generator,
               attack_gen, history, progress, f"{stage}admm")


def progressive_targets(targets: dict[str, float], stages: int) -> list[dict[str, float]]:
    """The ratios of each progressive stage: the kept fraction shrinks geometrically to the target's.

    >>> [round(t["fc"], 3) for t in progressive_targets({"fc": 0.99}, 2)]
    [0.9, 0.99]
    """
    return [{name: 1 - (1 - ratio) ** ((k + 1) / stages) for name, ratio in targets.items()} for k in range(stages)]


def _progressive(model: nn.Module, data, layers: dict[str, nn.Module], targets: dict[str, float], shape: Structure,
                 cfg: PruneConfig, generator: torch.Generator, attack_gen: torch.Generator,
                 history: list[dict[str, Any]], progress: bool) -> None:
    """Progressive ADMM (Ye et al., 2019): ADMM toward each stage's ratios, a masked retraining after each stage
    but the last (the caller retrains the final masks)."""
    schedule = progressive_targets(targets, cfg.stages)
    for k, stage_targets in enumerate(schedule):
        _admm_rounds(model, data, layers, stage_targets, shape, cfg, generator, attack_gen, history, progress,
                     stage=f"stage {k + 1}/{cfg.stages} ")
        if k + 1 < len(schedule):
            masks = {name: sparsity_mask(layers[name].weight.detach(), ratio, shape)
                     for name, ratio in stage_targets.items()}
            masked_retrain(model, data, masks, cfg, generator, progress, attack_generator=attack_gen)
            history[-1]["stage"] = k + 1


def _reweighted_rounds(model: nn.Module, data, layers: dict[str, nn.Module], targets: dict[str, float],
                       shape: Structure, cfg: PruneConfig, generator: torch.Generator, attack_gen: torch.Generator,
                       history: list[dict[str, Any]], progress: bool) -> None:
    """Reweighted dynamic regularisation (Zhang et al., 2020): each round penalises the weights outside the
    structure's projection by ``rho * sum P_i w_i^2`` and then reweights ``P_i = 1 / (w_i^2 + eps)``."""
    from advbench.training import accuracy, fit

    weights = {name: layers[name].weight for name in targets}
    optimiser = None
    for round_index in range(cfg.rounds):
        with torch.no_grad():
            outside = {n: 1 - sparsity_mask(w.detach(), targets[n], shape) for n, w in weights.items()}
            scale = {n: outside[n] / (w.detach().square() + REWEIGHT_EPS) for n, w in weights.items()}

        def penalty(scale=scale):
            return cfg.rho * sum((scale[n] * weights[n].square()).sum() for n in weights)

        optimiser = fit(model, data, epochs=cfg.epochs_per_round, lr=cfg.lr, batch_size=cfg.batch_size,
                        generator=generator, attack=_attack(cfg), attack_generator=attack_gen, penalty=penalty,
                        optimiser=optimiser, desc=f"reweighted round {round_index + 1}/{cfg.rounds}",
                        progress=progress)
        with torch.no_grad():
            residue = sum(float((outside[n] * weights[n]).norm()) for n in weights)
        history.append({"round": round_index + 1, "rho": cfg.rho, "pruned_weight_norm": residue,
                        "test_accuracy": accuracy(model, data.x_test, data.y_test)})


def quantization_schedule(bits: int, *, progressive: bool) -> list[int]:
    """The widths ADMM-NN quantizes to in turn: the target alone, or (progressive) halving from 8 bits down to it.

    >>> quantization_schedule(1, progressive=True), quantization_schedule(4, progressive=False)
    ([8, 4, 2, 1], [4])
    """
    if not progressive:
        return [bits]
    schedule, width = [], 8
    while width > bits:
        schedule.append(width)
        width //= 2
    return [*schedule, bits]


def _admm_quantize_rounds(model: nn.Module, data, layers: dict[str, nn.Module], masks: dict[str, torch.Tensor],
                          bits: int, cfg: PruneConfig, generator: torch.Generator, attack_gen: torch.Generator,
                          history: list[dict[str, Any]], progress: bool) -> None:
    """ADMM-NN (Ren et al., ASPLOS 2019): ADMM rounds whose Z-step quantizes ``W + U`` to ``bits`` on the kept
    weights (the pruning masks stay applied after every step), so training moves the weights toward the levels
    before they are snapped to them."""
    weights = {name: layers[name].weight for name in masks}
    _admm_loop(model, data, weights, lambda name, w: quantize(w * masks[name], bits)[0], cfg, generator, attack_gen,
               history, progress, f"admm-nn {bits}-bit", after_step=lambda: apply_masks(model, masks),
               note={"bits": bits})


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
