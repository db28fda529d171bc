"""Which experiment runs a config: the one it names, else the one the checkpoint's task calls for."""

from __future__ import annotations

from advbench.pipeline.config import RunConfig
from advbench.pipeline.experiment import EXPERIMENTS
from advbench.task_names import DETECTION, MULTITASK


def checkpoint_task(model_spec: str) -> str:
    """The task a model spec's checkpoint was trained for (``classification``, ``sod``, ``multitask``), read
    once from its sidecar without loading the weights."""
    from pathlib import Path

    from advbench.checkpoints import read_metadata

    path = Path(model_spec)
    if not path.is_file():  # a spec with a scheme or options is a classifier (sidecar-less zoo models included)
        return "classification"
    return str(read_metadata(path).get("task") or "classification")


#: The experiment that runs the attacks of a task other than classification.
TASK_EXPERIMENTS = {DETECTION: "detection", MULTITASK: "multitask"}


def choose_experiment(config: RunConfig) -> str:
    """``config.experiment`` when given; otherwise from the first checkpoint's task, the attacks' task (a roof
    patch runs the detection experiment, a multi-task attack the multi-task one) and the recipe (a min-max
    recipe runs the min-max experiment)."""
    import advbench

    if config.experiment is not None:
        EXPERIMENTS.get(config.experiment)  # unknown names list the known ones
        return config.experiment
    task = checkpoint_task(config.model)
    if task != "classification":
        return {"sod": "sod", "multitask": "multitask"}.get(task, task)
    advbench.list_attacks()
    from advbench.attack import ATTACKS

    tasks = {ATTACKS.get(name).task for name in config.attacks if name in ATTACKS}
    for attack_task, experiment in TASK_EXPERIMENTS.items():
        if attack_task in tasks:
            return experiment
    if any(getattr(ATTACKS.get(name), "multi_domain", False) for name in config.attacks if name in ATTACKS):
        return "minmax"
    return "classifier"
