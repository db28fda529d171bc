"""advbench: adversarial attacks and robustness benchmarks for dense and compressed PyTorch models.

The core imports no concrete attack at import time; :func:`create_attack` and :func:`list_attacks`
load :mod:`advbench.attacks` on first use.

>>> import advbench
>>> "pgd" in advbench.list_attacks()
True
>>> attack = advbench.create_attack("pgd", norm="linf", eps="8/255", steps=5)
>>> attack.steps, round(attack.eps, 5)
(5, 0.03137)
"""

from __future__ import annotations

from typing import Any

from advbench.attack import ATTACKS, Attack, AttackBase, AttackOutput

# Imported eagerly and bound last: a lazy ``import advbench.evaluate`` inside a function used to replace this
# attribute with the submodule, so the second ``advbench.evaluate(...)`` of a process raised "'module' object is
# not callable".  The submodule stays importable by its full name (``from advbench.evaluate import ...``).
from advbench.evaluate import evaluate  # noqa: E402  (after the modules it needs)
from advbench.models.loading import load_model
from advbench.pipeline.config import RunConfig
from advbench.threat import ThreatModel, parse_eps

__version__ = "0.1.0"


def _load_attacks() -> None:
    import advbench.attacks  # noqa: F401  (registers every attack)


def list_attacks(pattern: str | None = None, *, task: str | None = None) -> list[str]:
    """Names of the registered attacks, optionally filtered by a wildcard pattern and by ``task``
    (``classification``, ``detection`` or ``multi-task dense prediction``).

    >>> list_attacks("patch-*", task="detection")
    ['patch-minmax', 'patch-random-search', 'patch-transfer', 'patch-whitebox']
    """
    _load_attacks()
    return [n for n in ATTACKS.names(pattern) if task is None or ATTACKS.get(n).task == task]


def create_attack(name: str, **hyperparameters: Any) -> Any:
    """Build the attack registered as ``name`` with keyword-only ``hyperparameters`` (an :class:`AttackBase` of
    its task; a classifier attack is an :class:`Attack`)."""
    _load_attacks()
    return ATTACKS.get(name)(**hyperparameters)


def run(config: RunConfig | dict[str, Any], **options: Any) -> Any:
    """Run one evaluation through the pipeline (streamed, resumable, shardable): ``config`` is a
    :class:`RunConfig` or its fields as a dict; ``options`` go to :func:`advbench.pipeline.engine.run` (``store``,
    ``force``, ``shard``, ``executor``, ``workers``, ``progress``, ...).  Returns its ``Outcome`` (``.record``).

    >>> import advbench
    >>> config = advbench.RunConfig(models=["small_cnn?random=true"], dataset="digits", attacks=["fgsm"],
    ...                             eps=["8/255"], n_samples=20, batch_size=8)
    >>> outcome = advbench.run(config, progress=False)
    >>> outcome.record.metrics["n"], outcome.total
    (20, 3)
    """
    from advbench.pipeline.engine import run as run_pipeline

    if not isinstance(config, RunConfig):
        config = RunConfig.build(**config)
    return run_pipeline(config, **options)


__all__ = [
    "Attack",
    "AttackBase",
    "RunConfig",
    "AttackOutput",
    "ThreatModel",
    "create_attack",
    "evaluate",
    "list_attacks",
    "load_model",
    "parse_eps",
    "run",
]
