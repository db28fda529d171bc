"""Which layers are pruned, and by how much: a global ratio or per-layer ratios by layer name."""

from __future__ import annotations

from torch import nn

from advbench.compression.structures import Structure, create_structure, kept_count
from advbench.errors import ConfigError


def prunable_layers(model: nn.Module) -> dict[str, nn.Conv2d | nn.Linear]:
    """Conv2d and Linear layers by qualified name (the weights that pruning acts on)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def short_name(name: str) -> str:
    """``net.conv1`` → ``conv1``: the name users see (the wrapper's ``net.`` prefix dropped)."""
    return name[4:] if name.startswith("net.") else name


def parse_per_layer(text: str) -> dict[str, float]:
    """``'conv1=0.8,conv2=0.92'`` → ``{'conv1': 0.8, 'conv2': 0.92}``."""
    out: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--per-layer item '{item}' must look like LAYER=RATIO, e.g. conv1=0.8")
    return out


def resolve_targets(
    model: nn.Module, *, structure: str | Structure, target: float | None = None,
    per_layer: dict[str, float] | None = None
) -> dict[str, float]:
    """Qualified layer name → pruning ratio.

    A structure that fixes its own ratio (N:M) needs no target and records its own.  A global ``target`` applies
    to every eligible layer: for filter pruning the classifier's output layer is
    left whole (its rows are the classes), for channel pruning the first layer (its channels are the image's).
    ``per_layer`` names layers as ``advbench inspect`` shows them; an unknown name lists the real ones.
    """
    shape = create_structure(structure)  # unknown names list the known structures
    fixed = shape.effective_ratio(0.0)
    if fixed and target is None and per_layer is None:  # N:M fixes its own ratio: no target needed
        target = fixed
    if (target is None) == (per_layer is None):
        raise ConfigError("give exactly one of a global target (--target 0.9) or per-layer ratios (--per-layer)")
    layers = prunable_layers(model)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no Conv2d or Linear layer to prune")
    names = [name for name, layer in layers.items() if shape.applies_to(layer.weight)]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no layer that {shape.name} pruning applies to")
    if per_layer is not None:
        by_short = {short_name(n): n for n in names}
        out = {}
        for name, ratio in per_layer.items():
            qualified = name if name in names else by_short.get(name)
            if qualified is None:
                raise ConfigError(f"layer '{name}' does not exist or {shape.name} pruning does not apply to it; "
                                  f"prunable layers: {', '.join(by_short)}")
            kept_count(2, ratio)  # validates the range
            out[qualified] = float(ratio)
        return out
    kept_count(2, target)
    eligible = names
    if shape.name == "filter":
        eligible = names[:-1]
    elif shape.name == "channel":
        eligible = names[1:]
    return {name: float(target) for name in eligible}
