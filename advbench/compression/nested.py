"""Multi-level nested sparsity (Qin et al., 2021): one set of weights with nested masks at several sparsity
levels, the level chosen at inference.

Level 0 is the densest (the stored weights themselves); level ``k`` keeps, in every pruned layer, the
``kept_count(n, levels[k])`` largest-magnitude weights of level ``k - 1``'s, so each sparser sub-model is a
subset of the denser one.  A checkpoint stores one boolean mask per level and layer beside the weights (keys
``nested.<layer>.<k>`` in the same safetensors file); ``model.safetensors?level=K`` evaluates level ``K``.
The masks are read back and checked, not recomputed: a tampered mask that is not a subset of the next denser
one fails :func:`nested_violations`.
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


def apply_level(model: nn.Module, level: int) -> None:
    """Zero, in place, every weight that level ``level`` of a nested model prunes (0: the stored weights)."""
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
