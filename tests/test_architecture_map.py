"""docs/architecture.md's map of the tree: every folder and file it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_path_in_the_architecture_map_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## Where things live"):text.index("## One run, step by step")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| concept")]
    assert len(rows) >= 20
    paths = [p for row in rows for p in re.findall(r"`([\w./]+/?)`", row) if "/" in p]
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
    flow = text[text.index("## One run, step by step"):]
    named = set(re.findall(r"\b((?:advbench|datasets|attacks)/[\w/]+\.py)\b", flow))
    assert named and not [p for p in named if not (ROOT / p).exists()]


def test_task_packages_export_only_what_lives_in_them() -> None:
    """A task package (SOD, multi-task, detection) keeps its metrics, training and protocol; its data, models and
    attacks have one home each (datasets/, advbench/models/, attacks/) and are never re-exported from it."""
    import importlib

    for package in ("advbench.sod", "advbench.multitask", "advbench.detection"):
        module = importlib.import_module(package)
        foreign = {name: getattr(module, name).__module__ for name in module.__all__
                   if not getattr(module, name).__module__.startswith(package + ".")}
        assert not foreign, f"{package} re-exports names that live elsewhere: {foreign}"


def test_every_attack_lives_in_attacks_and_is_in_the_one_registry() -> None:
    """Patch and multi-task attacks are Attacks like the classifier ones: one registry, one folder."""
    import advbench
    from advbench.attack import ATTACKS, AttackBase

    for name in advbench.list_attacks():
        cls = ATTACKS.get(name)
        assert issubclass(cls, AttackBase) and cls.__module__.startswith("advbench.attacks."), (name, cls.__module__)
