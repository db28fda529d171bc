"""The Python API of one run in memory (RunSpec, prepare, load_victim) and the record helpers; :func:`run`
hands a spec to the pipeline (:mod:`advbench.pipeline.engine`).

A *run* is (model or checkpoint × dataset × attack suite × threat model × eps list × seed).  Its
resolved config is hashed; a run whose hash is already in the store is skipped unless ``force``.
The pipeline commits each finished batch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advbench.devices import check_device
from advbench.errors import ConfigError
from advbench.evaluate import EvaluationResult
from advbench.models.resolve import ModelOptions
from advbench.pipeline.victim import map_classes, open_victim, read_class_map  # noqa: F401 - re-exported
from advbench.records import code_version, config_hash, device_name, now_iso, package_versions, run_name
from advbench.threat import NORMS

log = logging.getLogger("advbench")


@dataclass
class RunSpec:
    """What the user asked for (CLI flags, a sweep cell or the Python API)."""

    model: str
    dataset: str
    attacks: list[str]
    eps: list[float]
    norm: str = "linf"
    n_samples: int | None = 500
    seed: int = 0
    batch_size: int = 256
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "cpu"
    defense: str | None = None
    model_options: ModelOptions = field(default_factory=ModelOptions)
    selection: str = "balanced"
    samples: str | None = None
    class_map: str | None = None

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"--norm must be one of {', '.join(NORMS)}, got '{self.norm}'")
        self.eps = list(self.to_config().eps)  # RunConfig is the one place eps is parsed
        if not self.attacks:
            raise ConfigError("--attack needs at least one attack name (see `advbench list attacks`)")
        if self.n_samples is not None and self.n_samples < 1:
            raise ConfigError(f"--n-samples must be >= 1, got {self.n_samples}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"--selection must be one of {', '.join(SELECTIONS)}, got '{self.selection}'")
        check_device(self.device)

    def to_config(self, experiment: str | None = None) -> Any:
        """This spec as the pipeline's validated :class:`~advbench.pipeline.config.RunConfig`."""
        from dataclasses import asdict

        from advbench.pipeline.config import RunConfig

        flags = {k: v for k, v in asdict(self.model_options).items() if v is not None}
        return RunConfig.build(models=[self.model], dataset=self.dataset, attacks=self.attacks, eps=self.eps,
                               norm=self.norm, n_samples=self.n_samples, seed=self.seed, batch_size=self.batch_size,
                               attack_params=self.attack_params, device=self.device, defense=self.defense,
                               model_flags=flags, selection=self.selection, samples=self.samples,
                               class_map=self.class_map, experiment=experiment)


SELECTIONS = ("balanced", "first")


@dataclass
class RunOutcome:
    record: dict[str, Any]
    skipped: bool
    result: EvaluationResult | None = None


@dataclass
class Victim:
    """A loaded model with the samples it is evaluated on and the provenance of both."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    identity: dict[str, Any]
    data: dict[str, Any]
    split_seed: int
    arch: str | None
    differentiable: bool = True
    warnings: list[str] = field(default_factory=list)


def load_victim(model_spec: str, dataset: str, *, seed: int = 0, device: str = "cpu",
                options: ModelOptions | None = None, n_samples: int | None = None, selection: str = "balanced",
                samples: str | None = None, class_map: str | None = None) -> Victim:
    """:func:`advbench.pipeline.victim.open_victim` with every selected sample decoded at once (for the
    in-memory callers: min-max recipes, the dense-vs-compressed comparison)."""
    streamed = open_victim(model_spec, dataset, seed=seed, device=device, options=options, n_samples=n_samples,
                           selection=selection, samples=samples, class_map=class_map)
    x, y = streamed.read(range(streamed.n_samples))
    return Victim(streamed.model, x.to(device), y.to(device), streamed.identity, streamed.data, streamed.split_seed,
                  streamed.arch, streamed.differentiable, streamed.warnings)


def prepare(spec: RunSpec):
    """Load the model and the evaluation samples; returns (model, x, y, config)."""
    from advbench.experiments.classifier import attack_hyperparameters, require_gradients

    attacks = attack_hyperparameters(spec.to_config())
    victim = load_victim(spec.model, spec.dataset, seed=spec.seed, device=spec.device, options=spec.model_options,
                         n_samples=spec.n_samples, selection=spec.selection, samples=spec.samples,
                         class_map=spec.class_map)
    require_gradients(victim.differentiable, spec.attacks, spec.model)
    x, y = victim.x, victim.y
    config = {
        "model": victim.identity,
        "arch": victim.arch,
        "dataset": spec.dataset,
        "data": victim.data,
        "split": "test",
        "split_seed": victim.split_seed,
        "n_samples": int(x.shape[0]),
        "norm": spec.norm,
        "eps": spec.eps,
        "attacks": attacks,
        "seed": spec.seed,
        "batch_size": spec.batch_size,
        **device_entry(spec.device),
    }
    model = victim.model
    if spec.defense:
        model, config["defense"] = defend(model, spec.defense, spec.device)
    model.run_warnings = victim.warnings
    return model, x, y, config


def device_entry(device: str | torch.device) -> dict[str, str]:
    """The run configuration's ``device`` entry: the device type off the CPU, nothing on it.

    Seeded draws and float rounding differ between devices, so a GPU run is another configuration than the
    same run on the CPU (and is not answered from a stored CPU record); CPU configurations stay as they were
    before the entry existed, so their stored records still match."""
    kind = torch.device(device).type
    return {} if kind == "cpu" else {"device": kind}


def defend(model: torch.nn.Module, defense: str, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """``model`` behind the defense ``defense`` (a spec such as ``jpeg:quality=60`` or ``defensenet:CKPT``),
    and the defense's record entry (name, params, differentiable, bpda)."""
    from advbench.defenses import DefendedModel, parse_defense

    defended = DefendedModel(parse_defense(defense).to(device), model)
    return defended, defended.defense_info()


def make_record(config: dict[str, Any], *, name: str, metrics: dict[str, Any], cost: dict[str, Any],
                samples: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """A finished run's store record: config and hash, provenance, metrics, cost, per-sample rows."""
    return {
        "config": config,
        "config_hash": config_hash(config),
        "name": name,
        "code_version": code_version(),
        "versions": package_versions(),
        "device": device_name(device),
        "metrics": metrics,
        "cost": cost,
        "status": "finished",
        "error": None,
        "created_at": now_iso(),
        "samples": samples,
    }


def build_record(config: dict[str, Any], result: EvaluationResult, device: str) -> dict[str, Any]:
    """The store record of a finished cascade evaluation."""
    summary = result.summary()
    cost = summary.pop("cost")
    return make_record(config, name=run_name(config), metrics=summary, cost=cost, samples=result.samples,
                       device=device)


def execute(config: dict[str, Any], compute, *, store: Any = None, force: bool = False) -> RunOutcome:
    """Return the stored record for ``config`` unless ``force``; otherwise ``compute()`` -> (record, result)
    and write the record in one transaction.  Nothing is written if ``compute`` is interrupted."""
    from advbench.store import ResultsStore

    digest = config_hash(config)
    db = ResultsStore(store) if isinstance(store, (str, Path)) else store
    try:
        seen = db.finished_run_id(digest) if db is not None else None
        if seen is not None and not force:
            log.info("run %s is already in the store; skipped (pass --force to rerun)", digest[:12])
            return RunOutcome(record=db.get_run(seen), skipped=True)
        record, result = compute()
        if db is not None:
            # One transaction keeps one finished record per config: a process that raced another to the same
            # config reports the record that survived, never an id the store did not keep.
            saved = db.save_run(record, replaces=seen)
            if not saved.written:
                return RunOutcome(record=saved.existing, skipped=True, result=result)
            record["id"] = saved.id
    finally:
        if db is not None and db is not store:
            db.close()
    return RunOutcome(record=record, skipped=False, result=result)


def run(
    spec: RunSpec,
    *,
    store: Any = None,
    force: bool = False,
    wandb: dict[str, Any] | None = None,
    progress: bool = True,
) -> RunOutcome:
    """Evaluate ``spec`` through the pipeline (:func:`advbench.pipeline.engine.run`) unless its config hash is
    stored; returns the record as a dict."""
    from advbench.pipeline.engine import run as run_pipeline

    outcome = run_pipeline(spec.to_config(), store=store, force=force, wandb=wandb, progress=progress)
    return RunOutcome(record=outcome.record.as_dict(), skipped=outcome.skipped)
