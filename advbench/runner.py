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

from advbench.checkpoints import file_sha256, load_model
from advbench.errors import ConfigError, InputError
from advbench.evaluate import EvaluationResult, evaluate
from advbench.records import code_version, config_hash, device_name, now_iso, package_versions
from advbench.threat import NORMS, parse_eps_list

log = logging.getLogger("advbench")


@dataclass
class RunSpec:
    """What the user asked for (CLI flags or a sweep cell)."""

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

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"--norm must be one of {', '.join(NORMS)}, got '{self.norm}'")
        self.eps = parse_eps_list(self.eps)
        if not self.attacks:
            raise ConfigError("--attack needs at least one attack name (see `advbench list attacks`)")
        if self.n_samples is not None and self.n_samples < 1:
            raise ConfigError(f"--n-samples must be >= 1, got {self.n_samples}")


@dataclass
class RunOutcome:
    record: dict[str, Any]
    skipped: bool
    result: EvaluationResult | None = None


def _model_identity(spec: str) -> dict[str, Any]:
    path = Path(spec)
    if path.exists() and path.is_file():
        return {"path": str(path), "name": path.stem, "sha256": file_sha256(path)}
    return {"name": spec}


def prepare(spec: RunSpec):
    """Load the model and the evaluation samples; returns (model, x, y, config)."""
    from advbench import create_attack
    from advbench.datasets import load_dataset

    # fail fast on unknown names and bad hyperparameters, before any data is loaded
    attacks = [create_attack(name, norm=spec.norm, eps=spec.eps[0], **spec.attack_params.get(name, {}))
               .hyperparameters() for name in spec.attacks]
    for params in attacks:
        params.pop("eps", None)
    identity = _model_identity(spec.model)
    if "path" in identity:
        model = load_model(spec.model)
        meta = getattr(model, "checkpoint_meta", {})
        split_seed = int(meta.get("training", {}).get("seed", 0))
    else:
        meta, split_seed = {}, 0
    data = load_dataset(spec.dataset, seed=split_seed)
    if "path" not in identity:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            mean, std = data.channel_stats()
            model = load_model(spec.model, input_shape=data.input_shape, num_classes=data.num_classes)
            model.mean.copy_(torch.tensor(mean).reshape(model.mean.shape))
            model.std.copy_(torch.tensor(std).reshape(model.std.shape))
    expected = tuple(getattr(model, "input_shape", data.input_shape))
    if expected != tuple(data.input_shape) or getattr(model, "num_classes", data.num_classes) != data.num_classes:
        raise InputError(
            f"model {spec.model} expects inputs {expected} with {getattr(model, 'num_classes', '?')} classes, but "
            f"dataset {spec.dataset} gives {tuple(data.input_shape)} with {data.num_classes} classes"
        )
    n = data.x_test.shape[0] if spec.n_samples is None else min(spec.n_samples, data.x_test.shape[0])
    x, y = data.x_test[:n].to(spec.device), data.y_test[:n].to(spec.device)
    model = model.to(spec.device)
    config = {
        "model": identity,
        "arch": getattr(model, "arch", meta.get("arch")),
        "dataset": spec.dataset,
        "split": "test",
        "split_seed": split_seed,
        "n_samples": n,
        "norm": spec.norm,
        "eps": spec.eps,
        "attacks": attacks,
        "seed": spec.seed,
        "batch_size": spec.batch_size,
    }
    return model, x, y, config


def build_record(config: dict[str, Any], result: EvaluationResult, device: str) -> dict[str, Any]:
    """The store record of a finished evaluation."""
    summary = result.summary()
    cost = summary.pop("cost")
    return {
        "config": config,
        "config_hash": config_hash(config),
        "name": f"{config['model'].get('name')}|{config['dataset']}|{config['norm']}",
        "code_version": code_version(),
        "versions": package_versions(),
        "device": device_name(device),
        "metrics": summary,
        "cost": cost,
        "status": "finished",
        "error": None,
        "created_at": now_iso(),
        "samples": result.samples,
    }


def run(
    spec: RunSpec,
    *,
    store: Any = None,
    force: bool = False,
    wandb: dict[str, Any] | None = None,
    progress: bool = True,
) -> RunOutcome:
    """Evaluate ``spec`` unless its config hash is stored; write the record and log it to W&B."""
    from advbench.store import ResultsStore

    model, x, y, config = prepare(spec)
    digest = config_hash(config)
    db = ResultsStore(store) if isinstance(store, (str, Path)) else store
    try:
        if db is not None and not force and db.has_run(digest):
            log.info("run %s is already in the store; skipped (pass --force to rerun)", digest[:12])
            return RunOutcome(record=db.get_run(digest), skipped=True)
        result = evaluate(model, x, y, attacks=spec.attacks, eps=spec.eps, norm=spec.norm,
                          attack_kwargs=spec.attack_params, batch_size=spec.batch_size, seed=spec.seed,
                          progress=progress)
        record = build_record(config, result, spec.device)
        if db is not None:
            record["id"] = db.write_run(record, force=True)
    finally:
        if db is not None and db is not store:
            db.close()
    if wandb is not None:
        log_to_wandb(record, result, **wandb)
    return RunOutcome(record=record, skipped=False, result=result)


def log_to_wandb(record: dict[str, Any], result: EvaluationResult, **options: Any) -> None:
    """Send one record (and its clean/adversarial image grid) to Weights & Biases."""
    from advbench.tracking import WandbSink

    images = None
    if result.x_clean is not None and result.x_adv:
        images = {"clean": result.x_clean[:8].cpu(), "adversarial": result.x_adv[max(result.x_adv)][:8].cpu()}
    tags = [record["config"]["norm"], *(a["name"] for a in record["config"]["attacks"])]
    with WandbSink(name=record["name"], config=record["config"], tags=tags, **options) as sink:
        sink.log_record(record, images=images)
