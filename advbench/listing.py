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


def _attack(name: str, cls: Any) -> dict[str, str]:
    """An attack's budget norms, how it reaches the victim and what it can aim at (from its class)."""
    if cls.task == "classification":
        targeted = "yes" if cls.supports_targeted else "no"
    else:
        targeted = "a target task" if "target_task" in cls.parameter_names() else "no"
    return {"norms": ",".join(getattr(cls, "norms", ("patch",))), "kind": cls.kind, "targeted": targeted}


def _described(name: str, obj: Any) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Listing:
    """One registry's entries in a listing: ``module:ATTRIBUTE`` of the registry, their task (None: each entry's
    own ``task`` attribute), one row each."""

    registry: str
    task: str | None
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
        Listing("advbench.attack:ATTACKS", None, _attack, registers="advbench.attacks"),  # each attack says its task
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
        entries = listing.entries()
        if listing.task is None:  # grouped by task, classification first, names sorted within a task
            entries.sort(key=lambda item: (item[1].task != "classification", item[1].task))
        for name, entry in entries:
            task = listing.task or entry.task
            if task_filter is None or task == task_filter:
                rows.append({"name": name, "task": task, **listing.describe(name, entry),
                             "description": _first_line(entry)})
    return rows
