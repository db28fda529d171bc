"""What sparsity structure a checkpoint has, verified from its tensors (``advbench inspect``).

A checkpoint written by ``advbench prune`` names its family in ``compression.family`` (method, structure and its
parameters, such as a PatDNN pattern library); every pruned layer's weight is checked against that structure at
its recorded ratio, so a tampered file fails.  A checkpoint from another tool carries no such record: its
tensors are read for N:M 2:4 sparsity, the semi-structured sparsity GPUs run (PyTorch's
``to_sparse_semi_structured``, a ``torch.nn.utils.prune`` mask), and it is recognised as that family.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from advbench.compression.structures import (
    NM,
    Structure,
    recognise_nm,
    structure_from_metadata,
    verify_layers,
)
from advbench.compression.targets import prunable_layers, short_name


def verify_checkpoint_structure(model: nn.Module) -> dict[str, Any]:
    """``structure`` (e.g. ``nm n=2 m=4``, or None), ``source`` (``metadata`` or ``tensors``), the ``layers``
    that hold to it and, per layer, its ``violations``."""
    weights = {short_name(name): layer.weight.detach() for name, layer in prunable_layers(model).items()}
    compression = getattr(model, "checkpoint_meta", {}).get("compression", {})
    entry = compression.get("family", {}).get("structure")
    if entry:
        structure = structure_from_metadata(entry)
        ratios = {name: float(r) for name, r in compression.get("targets", {}).items()}
        violations = verify_layers(weights, structure, ratios)
        if entry.get("name") == "nested":
            from advbench.compression.nested import nested_violations

            masks = getattr(model, "nested_masks", {})
            for layer, problems in nested_violations(weights, masks, entry["levels"]).items():
                violations.setdefault(layer, []).extend(problems)
            for layer in set(ratios) - set(masks):
                violations.setdefault(layer, []).append("no level masks stored for this pruned layer")
        return {"structure": structure_label(structure), "source": "metadata",
                "layers": sorted(set(ratios) - set(violations)), "violations": violations}
    two_four = recognise_nm(weights)
    if two_four:
        return {"structure": structure_label(NM(n=2, m=4)), "source": "tensors", "layers": two_four,
                "violations": {}}
    return {"structure": None, "source": None, "layers": [], "violations": {}}


def structure_label(structure: Structure) -> str:
    """``nm n=2 m=4``, ``block block_rows=8 block_cols=16``, ``pattern library_size=8 entries=4 (library of 8)``."""
    params = structure.parameters()
    library = params.pop("library", None)
    text = " ".join([structure.name, *(f"{k}={v}" for k, v in params.items())])
    return f"{text} (library of {len(library)})" if library else text


def family_label(compression: dict[str, Any]) -> str | None:
    """A compressed checkpoint's family in a few words, from its ``compression`` metadata: the method, the
    structure (with N:M's n:m) and the quantization width, e.g. ``admm nm 2:4``, ``progressive unstructured q1``,
    ``admm-adv block``.  None for a checkpoint written before families were recorded."""
    family = compression.get("family")
    if not family:
        return None
    structure = family.get("structure") or {}
    parts = [f"{family.get('method', '?')}{'-adv' if family.get('adversarial') else ''}",
             str(structure.get("name", "?"))]
    if structure.get("name") == "nm":
        parts.append(f"{structure.get('n')}:{structure.get('m')}")
    if family.get("quantize_bits"):
        parts.append(f"q{family['quantize_bits']}")
    return " ".join(parts)
