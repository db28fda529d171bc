"""One evaluation run, end to end: resolve the config, skip it if stored, evaluate, store, log.

A *run* is (model or checkpoint × dataset × attack suite × threat model × eps list × seed).  Its
resolved config is hashed; a run whose hash is already in the store is skipped unless ``force``.
The record is written once, in one transaction, after the evaluation finished, so an interrupted run
(Ctrl-C) leaves the store exactly as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advbench.devices import check_device
from advbench.errors import ConfigError
from advbench.evaluate import EvaluationResult, evaluate
from advbench.models.resolve import ModelOptions
from advbench.pipeline.victim import map_classes, open_victim, read_class_map  # noqa: F401 - re-exported
from advbench.records import code_version, config_hash, device_name, now_iso, package_versions, run_name
from advbench.threat import NORMS, parse_eps_list

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
        self.eps = parse_eps_list(self.eps)
        if not self.attacks:
            raise ConfigError("--attack needs at least one attack name (see `advbench list attacks`)")
        if self.n_samples is not None and self.n_samples < 1:
            raise ConfigError(f"--n-samples must be >= 1, got {self.n_samples}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"--selection must be one of {', '.join(SELECTIONS)}, got '{self.selection}'")
        check_device(self.device)


SELECTIONS = ("balanced", "first")


@dataclass
class RunOutcome:
    record: dict[str, Any]
    skipped: bool
    result: EvaluationResult | None = None


def resolve_attack_params(spec: RunSpec) -> list[dict[str, Any]]:
    """Build every attack once (unknown names and bad hyperparameters fail here, before any data is
    loaded) and return their hyperparameters without eps, for the config."""
    from advbench import create_attack

    attacks = [create_attack(name, norm=spec.norm, eps=spec.eps[0], **spec.attack_params.get(name, {}))
               .hyperparameters() for name in spec.attacks]
    for params in attacks:
        params.pop("eps", None)
    return attacks


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
    attacks = resolve_attack_params(spec)
    victim = load_victim(spec.model, spec.dataset, seed=spec.seed, device=spec.device, options=spec.model_options,
                         n_samples=spec.n_samples, selection=spec.selection, samples=spec.samples,
                         class_map=spec.class_map)
    require_gradients(victim, spec.attacks, spec.model)
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


def require_gradients(victim: Victim, attacks: list[str], model_spec: str) -> None:
    """Refuse white-box attacks on a model without input gradients (int8, some TorchScript) before any work."""
    if victim.differentiable:
        return
    import advbench
    from advbench.attack import ATTACKS

    advbench.list_attacks()
    white = [a for a in attacks if ATTACKS.get(a).kind != "black-box"]
    if white:
        black = [n for n in advbench.list_attacks() if ATTACKS.get(n).kind == "black-box"]
        raise ConfigError(
            f"{model_spec} has no input gradients (int8 or non-differentiable TorchScript), so the gradient attacks "
            f"{white} cannot run on it. Run black-box attacks ({', '.join(black)}) directly, or declare where "
            "gradients come from: add '?surrogate=PATH' (the float parent) or, for dynamic int8, '?gradients=bpda'")


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


def undefended_clean_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """The victim's clean accuracy without its defense (the defense's clean cost is the difference)."""
    from advbench.evaluate import _predict

    victim = getattr(model, "victim", None)
    if victim is None:
        return None
    return float((_predict(victim, x, 256) == y).float().mean())


def transfer_robust_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, spec: RunSpec,
                             batch_size: int = 256) -> dict[str, Any]:
    """Black-box transfer to a defended model: each attack of the cascade crafts examples on the *undefended*
    victim at every eps; a sample stays robust if the defended model classifies all of them correctly."""
    from advbench import create_attack

    victim = model.victim
    gen = torch.Generator(device=x.device).manual_seed(spec.seed)
    out = {}
    for eps in spec.eps:
        robust = torch.ones_like(y, dtype=torch.bool)
        for name in spec.attacks:
            attack = create_attack(name, norm=spec.norm, eps=eps, **spec.attack_params.get(name, {}))
            for i in range(0, x.shape[0], batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                x_adv = attack(victim, xb, yb, generator=gen).x_adv
                with torch.no_grad():
                    robust[i:i + batch_size] &= model(x_adv).argmax(dim=1) == yb
        out[f"{eps:g}"] = float(robust.float().mean())
    return {"attacks": list(spec.attacks), "robust_accuracy": out}


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
    """Evaluate ``spec`` unless its config hash is stored; write the record and log it to W&B."""
    model, x, y, config = prepare(spec)

    def compute():
        result = evaluate(model, x, y, attacks=spec.attacks, eps=spec.eps, norm=spec.norm,
                          attack_kwargs=spec.attack_params, batch_size=spec.batch_size, seed=spec.seed,
                          progress=progress, keep_examples=wandb is not None)  # W&B shows examples; else no copies
        record = build_record(config, result, spec.device)
        if spec.defense:
            record["metrics"]["defense"] = {**config["defense"],
                                            "clean_accuracy_undefended": undefended_clean_accuracy(model, x, y),
                                            "transfer": transfer_robust_accuracy(model, x, y, spec)}
        return record, result

    outcome = execute(config, compute, store=store, force=force)
    if wandb is not None and not outcome.skipped:
        log_to_wandb(outcome.record, outcome.result, **wandb)
    return outcome


def log_to_wandb(record: dict[str, Any], result: EvaluationResult, **options: Any) -> None:
    """Send one record (and its clean/adversarial image grid) to Weights & Biases."""
    from advbench.tracking import WandbSink

    images = None
    if result.x_clean is not None and result.x_adv:
        images = {"clean": result.x_clean[:8].cpu(), "adversarial": result.x_adv[max(result.x_adv)][:8].cpu()}
    tags = [record["config"]["norm"], *(a["name"] for a in record["config"]["attacks"])]
    with WandbSink(name=record["name"], config=record["config"], tags=tags, **options) as sink:
        sink.log_record(record, images=images)


def run_multidomain(
    spec: RunSpec,
    models: list[str],
    *,
    store: Any = None,
    force: bool = False,
    wandb: dict[str, Any] | None = None,
    progress: bool = True,
) -> RunOutcome:
    """Run one min-max recipe (``spec.attacks`` holds exactly one); several ``models`` form an ensemble."""
    from advbench.attacks.ensemble import ModelEnsemble
    from advbench.multidomain_eval import evaluate_multidomain

    if len(spec.attacks) != 1:
        raise ConfigError("a min-max recipe runs on its own, not in a cascade: pass exactly one --attack")
    attack = spec.attacks[0]
    params = resolve_attack_params(spec)
    victims = [load_victim(m, spec.dataset, seed=spec.seed, device=spec.device, options=spec.model_options,
                           n_samples=spec.n_samples, selection=spec.selection, samples=spec.samples,
                           class_map=spec.class_map) for m in models]
    for v, m in zip(victims, models, strict=True):
        require_gradients(v, spec.attacks, m)
    if len({v.split_seed for v in victims}) > 1:
        log.warning("the models were trained with different split seeds; evaluating on the split of %s", models[0])
    if attack.endswith("-ensemble"):
        names = [v.identity.get("name", m) for v, m in zip(victims, models, strict=True)]
        model = ModelEnsemble([v.model for v in victims], names=names)
    elif len(victims) != 1:
        raise ConfigError(f"'{attack}' attacks one model at a time")
    else:
        model = victims[0].model
    x, y = victims[0].x, victims[0].y
    n = int(x.shape[0])
    config = {
        "models": [v.identity for v in victims],
        "model": victims[0].identity if len(victims) == 1 else {"name": "+".join(v.identity["name"] for v in victims)},
        "dataset": spec.dataset,
        "data": victims[0].data,
        "split": "test",
        "split_seed": victims[0].split_seed,
        "n_samples": n,
        "norm": spec.norm,
        "eps": spec.eps,
        "attacks": params,
        "seed": spec.seed,
        "batch_size": spec.batch_size,
        **device_entry(spec.device),
    }

    def compute():
        result = evaluate_multidomain(model, x, y, attack=attack, eps=spec.eps, norm=spec.norm,
                                      params=spec.attack_params.get(attack, {}), batch_size=spec.batch_size,
                                      seed=spec.seed, progress=progress)
        record = make_record(config, name=run_name(config),
                             metrics=result.summary(), cost=result.cost, samples=result.samples, device=spec.device)
        return record, result

    outcome = execute(config, compute, store=store, force=force)
    record = outcome.record
    if wandb is not None and not outcome.skipped:
        from advbench.tracking import WandbSink

        with WandbSink(name=record["name"], config=config, tags=[spec.norm, attack], **wandb) as sink:
            sink.log_record(record)
            sink.log_weight_trace(record["metrics"]["weight_trace"], list(record["metrics"]["weights"]))
    return outcome
