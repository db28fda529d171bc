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
from advbench.task_names import DETECTION, MULTITASK


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
    #: The modules whose import registers the entries, when they are not the registry's own module.
    registers: tuple[str, ...] = ()

    def entries(self) -> list[tuple[str, Any, str]]:
        """``(name, entry, task)`` of every registered entry, grouped by task (the order of
        :data:`advbench.task_names.TASKS`); a plain dict of spec schemes lists ``scheme:<spec>``."""
        from advbench.task_names import TASKS

        module, attribute = self.registry.split(":")
        for name in self.registers:
            importlib.import_module(name)
        registry = getattr(importlib.import_module(module), attribute)
        if isinstance(registry, dict):
            return [(f"{scheme}:<spec>", registry[scheme], self.task or "") for scheme in registry]
        rows = [(name, registry.get(name), self.task or registry.task_of(name) or "") for name in registry.names()]
        order = {task: i for i, task in enumerate(TASKS)}
        return sorted(rows, key=lambda row: order.get(row[2], len(order)))


#: Kind -> the registries listed under it, in order.
LISTINGS: dict[str, tuple[Listing, ...]] = {
    "attacks": (
        Listing("advbench.attack:ATTACKS", None, _attack, registers=("advbench.attacks",)),
    ),
    "models": (
        Listing("advbench.models.registry:MODELS", None, registers=(
            "advbench.models", "advbench.models.sod", "advbench.models.multitask", "advbench.models.detectors")),
        Listing("advbench.models.resolve:ARCH_SCHEMES", "classification"),
    ),
    "datasets": (
        Listing("advbench.datasets.catalog:DATASETS", None, registers=(
            "advbench.datasets", "advbench.datasets.sod", "advbench.datasets.multitask",
            "advbench.datasets.detection")),
    ),
    "defenses": (Listing("advbench.defenses.registry:DEFENSES", "classification", registers=("advbench.defenses",)),),
    "experiments": (Listing("advbench.pipeline.experiment:EXPERIMENTS", "any", registers=("advbench.experiments",)),),
    "structures": (Listing("advbench.compression.structures:STRUCTURES", "classification"),),
}

#: Older kinds, kept as filters of the listings above: kind -> (listing kind, task).
ALIASES: dict[str, tuple[str, str]] = {
    "patch-attacks": ("attacks", DETECTION),
    "multitask-attacks": ("attacks", MULTITASK),
    "detectors": ("models", DETECTION),
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
        for name, entry, task in listing.entries():
            if task_filter is None or task == task_filter:
                rows.append({"name": name, "task": task, **listing.describe(name, entry),
                             "description": _first_line(entry)})
    return rows
