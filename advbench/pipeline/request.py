"""From what a user typed to :class:`~advbench.pipeline.config.RunConfig` objects, validated once.

``advbench run`` parses its flags and hands them here: shared knobs (``--steps``, ``--gamma``, ...) go to the
attacks that take them, ``--param ATTACK.NAME=VALUE`` is checked against the cascade, the checkpoint's task is
read once to choose the experiment, and one config is built per model (an ensemble recipe or a comparison
takes them all in one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from advbench.errors import ConfigError
from advbench.pipeline.config import RunConfig

#: Knobs that SOD and multi-task experiments do not take (they have their own attacks).
_CLASSIFIER_KNOBS = ("gamma", "alpha", "beta", "loss", "kappa", "k", "transforms")


def check_params_target(params: dict[str, dict[str, Any]], attacks: list[str]) -> None:
    """``--param`` must name an attack of the cascade, and never the budget (that is --norm / --eps)."""
    for name, values in params.items():
        if name not in attacks:
            raise ConfigError(f"--param {name}.{next(iter(values))}=... names attack '{name}', which is not in "
                              f"--attack ({', '.join(attacks)}); add it there or fix the name")
        for reserved in ("norm", "eps"):
            if reserved in values:
                raise ConfigError(f"--param {name}.{reserved} is not allowed: set the budget with --{reserved}")


def attack_class(attack: str) -> Any:
    import advbench
    from advbench.attack import ATTACKS

    advbench.list_attacks()
    return ATTACKS.get(attack)


def accepts(attack: str, pname: str) -> bool:
    """Whether the registered attack ``attack`` has a hyperparameter ``pname``."""
    return pname in attack_class(attack).parameter_names()


def route_knobs(attacks: list[str], knobs: dict[str, Any], params: dict[str, dict[str, Any]],
                notes: Callable[..., Any] | None = None) -> None:
    """Give each shared knob to every attack of the cascade that takes it (``--param`` wins); a knob no attack
    takes is an error, and one some attacks ignore is noted."""
    for pname, value in knobs.items():
        if value is None:
            continue
        takers = [name for name in attacks if accepts(name, pname)]
        if not takers:
            raise ConfigError(f"--{pname} does not apply to {', '.join(attacks)}")
        others = [name for name in attacks if name not in takers]
        if others and notes is not None:
            notes(f"note: --{pname} {value} applies to {', '.join(takers)}; {', '.join(others)} "
                  + ("has no '{0}' and keeps its" if len(others) == 1 else "have no '{0}' and keep their")
                  .format(pname) + " own settings (see --param)", highlight=False)
        for name in takers:
            params.setdefault(name, {}).setdefault(pname, value)


def whole_groups(attack: str, params: dict[str, dict[str, Any]], batch_size: int, norm: str,
                 notes: Callable[..., Any] | None) -> int:
    """A universal recipe shares one perturbation over groups of ``k`` inputs within a batch: the batch size
    rounded down to a multiple of ``k`` (and said so), so the default batch size works with any ``k``."""
    from advbench import create_attack

    k = create_attack(attack, norm=norm, eps=0.0, **params.get(attack, {})).hyperparameters().get("k")
    if not k or batch_size % int(k) == 0:
        return batch_size
    rounded = max(int(k), batch_size - batch_size % int(k))
    if notes is not None:
        notes(f"note: {attack} shares a perturbation over groups of k={k} inputs; batch size {batch_size} -> "
              f"{rounded} (a multiple of k)", highlight=False)
    return rounded


def build_run_configs(*, models: list[str], dataset: str, attacks: list[str], eps: Any,
                      params: dict[str, dict[str, Any]], knobs: dict[str, Any], multitask: dict[str, Any],
                      notes: Callable[..., Any] | None = None, **fields: Any) -> list[RunConfig]:
    """The run configs of one ``advbench run`` (see the module docstring)."""
    from advbench.experiments import choose_experiment

    check_params_target(params, attacks)
    probe = RunConfig.build(models=models[:1], dataset=dataset, attacks=attacks, eps=eps,
                            **{k: v for k, v in fields.items() if k != "model_flags"})
    experiment = choose_experiment(probe)  # reads the first checkpoint's task, once
    options: dict[str, Any] = {}
    if experiment in ("sod", "multitask"):
        ignored = [f"--{k}" for k in _CLASSIFIER_KNOBS if knobs.get(k) is not None]
        if ignored:
            raise ConfigError(f"{', '.join(ignored)} do(es) not apply to SOD or multi-task models (they have "
                              "their own attacks); drop them")
        if knobs.get("steps") is not None:
            for name in attacks:
                params.setdefault(name, {}).setdefault("steps", knobs["steps"])
        if len(models) > 1:
            raise ConfigError(f"a {experiment} model is evaluated on its own; pass one --model")
        if experiment == "multitask":
            options = {k: v for k, v in multitask.items() if v is not None}
        fields["model_flags"] = {}
    else:
        if multitask.get("target_task") is not None:
            raise ConfigError("--target-task applies to multi-task models only")
        multi = [name for name in attacks if getattr(attack_class(name), "multi_domain", False)]
        if multi and len(attacks) > 1:
            raise ConfigError(f"min-max recipe {multi[0]} runs on its own, not in a cascade with "
                              f"{', '.join(attacks)}")
        if multi and fields.get("defense"):
            raise ConfigError("--defense applies to attack cascades, not to min-max recipes")
        route_knobs(attacks, knobs, params, notes)
    if experiment == "minmax":
        fields["batch_size"] = whole_groups(attacks[0], params, fields.get("batch_size", 256),
                                            fields.get("norm", "linf"), notes)
    groups = [models] if experiment == "minmax" and attacks[0].endswith("-ensemble") else [[m] for m in models]
    flags = {k: v for k, v in (fields.pop("model_flags", None) or {}).items() if v is not None}
    return [RunConfig.build(models=group, dataset=dataset, attacks=attacks, eps=eps, attack_params=params,
                            experiment=experiment, options=options, model_flags=flags, **fields)
            for group in groups]
