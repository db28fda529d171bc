"""What ``advbench list KIND`` prints, generated from the registries (nothing here names an entry).

Each kind (attacks, models, datasets, defenses, experiments) is a list of :class:`Listing` rows sources: a
registry (imported only when listed), the task its entries serve and a function describing one entry.  A new
attack, model or data set shows up in ``advbench list`` as soon as it is registered.

>>> rows = listing_rows("attacks")
>>> {"fgsm", "patch-whitebox", "stealthy-multitask"} <= {row["name"] for row in rows}
True
>>> sorted({row["task"] for row in rows})
['classification', 'detection', 'multi-task dense prediction']
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from advbench.errors import ConfigError


def _first_line(obj: Any) -> str:
    """The first line of ``obj``'s docstring as plain text (reST roles and literals unwrapped)."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    if not doc:
        return ""
    line = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc.splitlines()[0]).replace("``", "")
    return re.sub(r"\s*\(see the module doc(string)?\)", "", line).rstrip(".;: ")


def _classifier_attack(name: str, cls: Any) -> dict[str, str]:
    return {"norms": ",".join(cls.norms), "kind": cls.kind, "targeted": "yes" if cls.supports_targeted else "no"}


def _multitask_attack(name: str, cls: Any) -> dict[str, str]:
    return {"norms": ",".join(cls.norms), "kind": cls.kind, "targeted": "a target task"}


def _patch_attack(name: str, cls: Any) -> dict[str, str]:
    return {"norms": "patch", "kind": cls.kind, "targeted": "no"}


def _described(name: str, obj: Any) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Listing:
    """One registry's entries in a listing: ``module:ATTRIBUTE`` of the registry, their task, one row each."""

    registry: str
    task: str
    describe: Callable[[str, Any], dict[str, str]] = _described
    #: The package whose import registers the entries, when it is not the registry's own module.
    registers: str | None = None

    def entries(self) -> list[tuple[str, Any]]:
        """``(name, entry)`` of every registered entry; a plain dict of spec schemes lists ``scheme:<spec>``."""
        module, attribute = self.registry.split(":")
        if self.registers:
            importlib.import_module(self.registers)
        registry = getattr(importlib.import_module(module), attribute)
        if isinstance(registry, dict):
            return [(f"{scheme}:<spec>", registry[scheme]) for scheme in registry]
        return [(name, registry.get(name)) for name in registry.names()]


#: Kind -> the registries listed under it, in order.
LISTINGS: dict[str, tuple[Listing, ...]] = {
    "attacks": (
        Listing("advbench.attack:ATTACKS", "classification", _classifier_attack, registers="advbench.attacks"),
        Listing("advbench.detection.patch_attacks:PATCH_ATTACKS", "detection", _patch_attack),
        Listing("advbench.attacks.multitask:MULTITASK_ATTACKS", "multi-task dense prediction", _multitask_attack),
    ),
    "models": (
        Listing("advbench.models.registry:MODELS", "classification"),
        Listing("advbench.models.resolve:ARCH_SCHEMES", "classification"),
        Listing("advbench.models.sod:SOD_MODELS", "salient-object detection"),
        Listing("advbench.models.multitask:MULTITASK_MODELS", "multi-task dense prediction"),
        Listing("advbench.models.detectors:DETECTORS", "detection"),
    ),
    "datasets": (
        Listing("advbench.datasets.catalog:DATASETS", "classification"),
        Listing("advbench.datasets.sod:SOD_DATASETS", "salient-object detection"),
        Listing("advbench.datasets.multitask:MULTITASK_DATASETS", "multi-task dense prediction"),
        Listing("advbench.datasets.detection.catalog:DETECTION_DATASETS", "detection"),
    ),
    "defenses": (Listing("advbench.defenses.registry:DEFENSES", "classification", registers="advbench.defenses"),),
    "experiments": (Listing("advbench.pipeline.experiment:EXPERIMENTS", "any", registers="advbench.experiments"),),
}

#: Older kinds, kept as filters of the listings above: kind -> (listing kind, task).
ALIASES: dict[str, tuple[str, str]] = {
    "patch-attacks": ("attacks", "detection"),
    "multitask-attacks": ("attacks", "multi-task dense prediction"),
    "detectors": ("models", "detection"),
}


def listing_rows(kind: str) -> list[dict[str, str]]:
    """One row per registered entry of ``kind`` (``name``, ``task`` and what its listing describes)."""
    task_filter = None
    if kind in ALIASES:
        kind, task_filter = ALIASES[kind]
    if kind not in LISTINGS:
        raise ConfigError(f"cannot list '{kind}'; choose one of {', '.join([*LISTINGS, *ALIASES])}")
    rows = []
    for listing in LISTINGS[kind]:
        if task_filter is not None and listing.task != task_filter:
            continue
        for name, entry in listing.entries():
            rows.append({"name": name, "task": listing.task, **listing.describe(name, entry),
                         "description": _first_line(entry)})
    return rows
