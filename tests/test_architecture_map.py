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
    """A task package (SOD, multi-task, detection) keeps its metrics and its Experiment; its data, models, attacks
    and training have one home each (datasets/, advbench/models/, attacks/, advbench/training/) and are never
    re-exported from it."""
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


#: What each task package may hold: its metrics, its Experiment, and the pieces only that Experiment uses (the
#: protocol's rows or steps, the report it writes).
TASK_PACKAGE_MODULES = {
    "sod": {"metrics", "experiment", "robustness"},
    "multitask": {"metrics", "experiment", "robustness"},
    "detection": {"metrics", "experiment", "protocol", "report"},
}


def test_task_packages_hold_only_their_metrics_and_their_experiment() -> None:
    for package, allowed in TASK_PACKAGE_MODULES.items():
        modules = {path.stem for path in (ROOT / "advbench" / package).glob("*.py")} - {"__init__"}
        extra, missing = sorted(modules - allowed), sorted(allowed - modules)
        assert not extra, f"advbench/{package}/ holds {extra}: move them to their one home (datasets/, " \
            "advbench/models/, attacks/ or advbench/training/)"
        assert not missing, f"advbench/{package}/ lacks {missing}"


def test_each_experiment_lives_with_its_task() -> None:
    """Classification experiments in advbench/experiments/, every other task's next to its metrics."""
    import advbench.experiments  # noqa: F401 - registers every experiment
    from advbench.pipeline.experiment import EXPERIMENTS

    homes = {name: EXPERIMENTS.get(name).__module__ for name in EXPERIMENTS.names()}
    assert homes["sod"] == "advbench.sod.experiment"
    assert homes["multitask"] == "advbench.multitask.experiment"
    assert homes["detection"] == "advbench.detection.experiment"
    others = {name: module for name, module in homes.items() if name not in TASK_PACKAGE_MODULES}
    assert others and all(module.startswith("advbench.experiments.") for module in others.values()), others


def test_training_has_one_home() -> None:
    """Every task's training (and its checkpoints) lives in advbench/training/, nowhere else."""
    stray = [str(path.relative_to(ROOT)) for folder in ("advbench", "attacks", "datasets", "defenses")
             for path in (ROOT / folder).rglob("*train*.py")
             if "advbench/training/" not in path.as_posix() and path.name != "adversarial_training.py"]
    assert not stray, f"training code outside advbench/training/: {stray}"
    assert {p.stem for p in (ROOT / "advbench" / "training").glob("*.py")} >= {
        "classifier", "dense", "sod", "multitask", "detection"}
