"""Multi-level nested sparsity (Qin et al., 2021): one set of weights with nested masks at several sparsity
levels, the level chosen at inference.

Level 0 is the densest (the stored weights themselves); level ``k`` keeps, in every pruned layer, the
``kept_count(n, levels[k])`` largest-magnitude weights of level ``k - 1``'s, so each sparser sub-model is a
subset of the denser one.  A checkpoint stores one boolean mask per level and layer beside the weights (keys
``nested.<layer>.<k>`` in the same safetensors file); ``model.safetensors?level=K`` evaluates level ``K``.
The masks are read back and checked, not recomputed: a tampered mask that is not a subset of the next denser
one fails :func:`nested_violations`.

Each level's sub-model computes different activations, so one set of BatchNorm running statistics cannot serve
them all: trained jointly, they end up a blend that fits no level (a ResNet-20 level read 14% clean accuracy).  As
in switchable BatchNorm (Yu et al., "Slimmable Neural Networks", ICLR 2019), every level gets its own statistics,
re-estimated on the training images with that level's weights (:func:`calibrate_level_norms`), stored as
``nested_norm.<module>.<buffer>.<k>`` and swapped in by ``?level=K``.  The plain weights carry level 0's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from advbench.compression.structures import kept_count
from advbench.compression.targets import prunable_layers, short_name
from advbench.errors import ConfigError

#: Prefix of the mask tensors in a nested checkpoint's safetensors file.
NESTED_PREFIX = "nested."
#: Prefix of the per-level BatchNorm statistics (not under NESTED_PREFIX: "nested_norm." does not start with it).
NORM_PREFIX = "nested_norm."
NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Sparsity levels as an ascending tuple of ratios in [0, 1), at least two."""
    out = tuple(float(v) for v in levels)
    if len(out) < 2 or any(not 0 <= v < 1 for v in out) or list(out) != sorted(set(out)):
        raise ConfigError(f"nested levels must be at least two distinct, ascending pruning ratios in [0, 1) such as "
                          f"0.5,0.75,0.9; got {list(levels)}")
    return out


def nested_masks(weight: torch.Tensor, levels: Sequence[float]) -> list[torch.Tensor]:
    """One boolean mask per level (densest first): level ``k`` keeps the largest-magnitude weights of level
    ``k - 1``, ``kept_count(weight.numel(), levels[k])`` of them.  Each mask is the exact projection onto its
    level's set among the weights the denser level kept."""
    levels = check_levels(levels)
    order = weight.detach().abs().flatten().argsort(descending=True, stable=True)
    masks = []
    for ratio in levels:
        flat = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
        flat[order[:kept_count(weight.numel(), ratio)]] = True
        masks.append(flat.reshape(weight.shape))
    return masks


def nested_tensors(model: nn.Module, layers: Sequence[str], levels: Sequence[float]) -> dict[str, torch.Tensor]:
    """The mask tensors a nested checkpoint stores for ``layers`` (qualified names) of ``model``."""
    modules = prunable_layers(model)
    out = {}
    for name in layers:
        for k, mask in enumerate(nested_masks(modules[name].weight, levels)):
            out[f"{NESTED_PREFIX}{short_name(name)}.{k}"] = mask.to(torch.uint8).cpu()
    return out


def split_nested(state: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Remove the mask tensors from a checkpoint's ``state`` (in place); returns layer -> masks, densest first."""
    found: dict[str, dict[int, torch.Tensor]] = {}
    for key in [k for k in state if k.startswith(NESTED_PREFIX)]:
        layer, _, level = key[len(NESTED_PREFIX):].rpartition(".")
        found.setdefault(layer, {})[int(level)] = state.pop(key).bool()
    return {layer: [masks[k] for k in sorted(masks)] for layer, masks in found.items()}


def split_level_norms(state: dict[str, torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    """Remove the per-level BatchNorm statistics from a checkpoint's ``state`` (in place); returns level ->
    {``<module>.<buffer>``: tensor}."""
    found: dict[int, dict[str, torch.Tensor]] = {}
    for key in [k for k in state if k.startswith(NORM_PREFIX)]:
        name, _, level = key[len(NORM_PREFIX):].rpartition(".")
        found.setdefault(int(level), {})[name] = state.pop(key)
    return found


def _norm_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


def _reestimate_norms(model: nn.Module, norms: Mapping[str, nn.modules.batchnorm._BatchNorm], x: torch.Tensor,
                      batch_size: int) -> None:
    """Running statistics of ``norms`` re-estimated from scratch on ``x``: the exact average over its batches
    (momentum ``None``), everything else in eval mode, no gradients."""
    modes = {m: m.training for m in model.modules()}
    momenta = {name: m.momentum for name, m in norms.items()}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    try:
        for m in norms.values():
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for batch in x.split(batch_size):
                model(batch.to(device))
    finally:
        for module, mode in modes.items():
            module.train(mode)
        for name, norm in norms.items():
            norm.momentum = momenta[name]


def calibrate_level_norms(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Each level's BatchNorm statistics, re-estimated on the images ``x`` with that level's weights: the tensors
    a nested checkpoint stores (empty for a model without BatchNorm).  The model keeps its weights and ends with
    level 0's statistics, so it is level 0 as loaded without ``?level``."""
    norms = _norm_layers(model)
    masks: Mapping[str, list[torch.Tensor]] = getattr(model, "nested_masks", {})
    if not norms or not masks:
        return {}
    layers = prunable_layers(model)
    kept = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    out: dict[str, torch.Tensor] = {}
    for k in reversed(range(len(next(iter(masks.values()))))):  # level 0 last, so its statistics stay
        apply_level(model, k)
        _reestimate_norms(model, norms, x, batch_size)
        for name, m in norms.items():
            for buffer in NORM_BUFFERS:
                out[f"{NORM_PREFIX}{name}.{buffer}.{k}"] = getattr(m, buffer).detach().clone().cpu()
        with torch.no_grad():
            for name, layer in layers.items():
                layer.weight.copy_(kept[name])
    return out


def apply_level(model: nn.Module, level: int) -> None:
    """Zero, in place, every weight that level ``level`` of a nested model prunes (0: the stored weights), and
    load that level's BatchNorm statistics where the checkpoint has them."""
    masks: Mapping[str, list[torch.Tensor]] = getattr(model, "nested_masks", {})
    if not masks:
        raise ConfigError("?level= applies to nested checkpoints (advbench prune --structure nested); this one "
                          "has no level masks")
    count = len(next(iter(masks.values())))
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < count:
        raise ConfigError(f"level must be an integer in [0, {count - 1}] for this nested checkpoint (0 is the "
                          f"densest), got {level!r}")
    modules = {short_name(n): m for n, m in prunable_layers(model).items()}
    with torch.no_grad():
        for layer, layer_masks in masks.items():
            weight = modules[layer].weight
            weight.mul_(layer_masks[level].to(weight.device, weight.dtype))
        norms: Mapping[int, Mapping[str, torch.Tensor]] = getattr(model, "nested_norms", {})
        if norms:
            buffers = dict(model.named_buffers())
            for name, value in norms[level].items():
                if name not in buffers:
                    raise ConfigError(f"this nested checkpoint has level statistics for '{name}', which the model "
                                      "does not have; the checkpoint does not match its architecture")
                buffers[name].copy_(value.to(buffers[name].device, buffers[name].dtype))


def nested_violations(weights: Mapping[str, torch.Tensor], masks: Mapping[str, list[torch.Tensor]],
                      levels: Sequence[float]) -> dict[str, list[str]]:
    """Per layer, where a nested checkpoint breaks its contract: a level's mask that is not a subset of the next
    denser one, a level that keeps more than its ratio allows, a weight that lives outside the densest mask."""
    problems: dict[str, list[str]] = {}
    for layer, layer_masks in masks.items():
        found = []
        if layer not in weights:
            problems[layer] = [f"layer {layer} has level masks but no weight"]
            continue
        weight = weights[layer]
        if len(layer_masks) != len(levels):
            found.append(f"{len(layer_masks)} level masks, {len(levels)} levels recorded")
        for k, mask in enumerate(layer_masks):
            if mask.shape != weight.shape:
                found.append(f"level {k} mask has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}")
                continue
            if k < len(levels) and int(mask.sum()) > kept_count(weight.numel(), levels[k]):
                found.append(f"level {k} keeps {int(mask.sum())} weights, at most "
                             f"{kept_count(weight.numel(), levels[k])} allowed at ratio {levels[k]}")
            if k and bool((mask & ~layer_masks[k - 1]).any()):
                found.append(f"level {k} keeps {int((mask & ~layer_masks[k - 1]).sum())} weights that level "
                             f"{k - 1} prunes: not nested")
        if layer_masks and bool(((weight != 0) & ~layer_masks[0]).any()):
            found.append("weights outside the densest level's mask are non-zero")
        if found:
            problems[layer] = found
    return problems


def level_summary(model: nn.Module, levels: Sequence[float]) -> list[dict[str, Any]]:
    """Per level: the non-zero weights of the pruned layers and the compression ratio of the whole model."""
    masks: Mapping[str, list[torch.Tensor]] = getattr(model, "nested_masks", {})
    weights = {short_name(n): m.weight.detach() for n, m in prunable_layers(model).items()}
    total = sum(w.numel() for w in weights.values())
    out = []
    for k, ratio in enumerate(levels):
        nonzero = sum(int((w != 0).sum()) if name not in masks else int((masks[name][k] & (w != 0)).sum())
                      for name, w in weights.items())
        out.append({"level": k, "ratio": ratio, "nonzero": nonzero, "compression_ratio": total / max(1, nonzero)})
    return out
