"""``advbench defend train`` and the SOD branch of ``advbench run`` (clean / cloudy / adv-cloud rows).

Registered on :data:`advbench.cli.app` when :mod:`advbench.cli` is imported.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from advbench.cli import _fmt, _split, app, err, out
from advbench.errors import ConfigError

defend_app = typer.Typer(no_args_is_help=True, help="Train learnable defenses (DefenseNet) for a frozen victim.")
app.add_typer(defend_app, name="defend")

SOD_ATTACKS = ("adv-cloud", "pgd")


def is_sod_checkpoint(path: str) -> bool:
    """True for an SOD model checkpoint (its metadata says ``task: sod``)."""
    from advbench.checkpoints import read_metadata

    p = Path(path)
    return p.is_file() and read_metadata(p).get("task") == "sod"


def _victim_and_data(victim: str, dataset: str, n_train: int | None) -> tuple[Any, Any, Any, Any]:
    """(model, x_train, targets, task) for an SOD or a classifier checkpoint."""
    from advbench.tasks import CLASSIFICATION, SOD

    if is_sod_checkpoint(victim):
        from advbench.sod import load_sod_dataset, load_sod_model

        model = load_sod_model(victim)
        data = load_sod_dataset(dataset)
        x, y, task = data.x_train, data.m_train, SOD
    else:
        from advbench.checkpoints import load_model
        from advbench.datasets import load_dataset

        model = load_model(victim)
        seed = int(getattr(model, "checkpoint_meta", {}).get("training", {}).get("seed", 0))
        data = load_dataset(dataset, seed=seed)
        x, y, task = data.x_train, data.y_train, CLASSIFICATION
    if n_train is not None:
        x, y = x[:n_train], y[:n_train]
    return model, x, y, task


@defend_app.command("train")
def defend_train(
    victim: str = typer.Option(..., "--victim", help="checkpoint of the frozen model to protect (SOD or classifier)"),
    dataset: str = typer.Option(..., "--dataset", help="its data set, e.g. synthetic-sod, eorssd:/path, digits"),
    out_path: Path = typer.Option(..., "--out", help="where to write the DefenseNet .safetensors"),
    attack: str = typer.Option("adv-cloud,pgd", "--attack", help="adversarial inputs to train on: adv-cloud, pgd"),
    epochs: int = typer.Option(10, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    lam: float = typer.Option(1.0, "--lam", help="weight of the L1 reconstruction term"),
    eps_e: str = typer.Option("0.2", "--eps-e", help="exposure budget ||E - 1||_inf (fractions like 1/8 allowed)"),
    eps: str = typer.Option("8/255", "--eps", help="additive budget ||N||_inf (fractions like 8/255 allowed)"),
    attack_steps: int = typer.Option(5, "--attack-steps", help="attack steps per training batch"),
    base: int = typer.Option(4, "--base", help="U-Net width"),
    depth: int = typer.Option(2, "--depth", help="U-Net depth"),
    n_train: int | None = typer.Option(None, "--n-train", help="use only the first N training images"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (the victim and data move there)"),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object on stdout"),
) -> None:
    """Train DefenseNet in front of a frozen victim on clean, cloudy and adversarial inputs."""
    from advbench.defenses.defensenet import DefenseTrainConfig, save_defensenet, train_defensenet
    from advbench.devices import check_device
    from advbench.threat import parse_eps

    dev = check_device(device)
    kinds = _split(attack)
    unknown = [k for k in kinds if k not in SOD_ATTACKS]
    if unknown:
        raise ConfigError(f"--attack {','.join(unknown)}: DefenseNet trains on {', '.join(SOD_ATTACKS)} inputs")
    model, x, y, task = _victim_and_data(victim, dataset, n_train)
    cfg = DefenseTrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, lam=lam, eps_e=parse_eps(eps_e),
                             eps_n=parse_eps(eps),
                             attack_steps=attack_steps, base=base, depth=depth, seed=seed,
                             inputs=("clean", "cloudy", *kinds))
    net, summary = train_defensenet(model.to(dev), x.to(dev), y.to(dev), task, cfg, progress=True)
    path = save_defensenet(net, out_path, victim_checkpoint=victim,
                           extra={"dataset": dataset, "task_of_victim": task.name, "training": summary})
    if as_json:
        sys.stdout.write(json.dumps({"checkpoint": str(path), **summary}) + "\n")
    else:
        err.print(f"saved {path} (final loss {summary['final_loss']:.4f}); evaluate with "
                  f"`advbench run --model {shlex.quote(str(victim))} --dataset {shlex.quote(str(dataset))} "
                  f"--defense {shlex.quote(f'defensenet:{path}')}`", highlight=False, markup=False)


def print_sod_table(record: dict[str, Any]) -> None:
    """One row per condition, columns the SOD metrics."""
    rows = record["metrics"]["rows"]
    table = Table(title=f"SOD robustness of {record['config']['model'].get('name')} on {record['config']['dataset']}")
    cols = ("mae", "max_f", "mean_f", "s_measure", "mean_e")
    table.add_column("condition")
    for col in cols:
        table.add_column(col, justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *(_fmt(metrics.get(c)) for c in cols))
    out.print(table)


def run_sod(model: str, dataset: str, attacks: list[str], eps: list[float], n_samples: int | None,
            defense: str | None, params: dict[str, dict[str, Any]], seed: int, store: Path, force: bool,
            as_json: bool, wandb: dict[str, Any] | None = None, device: str = "cpu", progress: bool = True) -> None:
    """``advbench run`` on an SOD checkpoint: the rows of :func:`advbench.sod.robustness.sod_robustness`.
    The victim, its defense and the images move to ``device``; the clouds are drawn on the CPU either way.
    ``progress`` shows the attack steps as a bar on stderr."""
    from advbench.checkpoints import file_sha256
    from advbench.devices import check_device
    from advbench.runner import defend, device_entry, execute, make_record
    from advbench.sod import load_sod_dataset, load_sod_model
    from advbench.sod.robustness import CloudAttackConfig, sod_robustness

    unknown = [a for a in attacks if a not in SOD_ATTACKS]
    if unknown:
        raise ConfigError(f"an SOD model is evaluated with {', '.join(SOD_ATTACKS)}, not {', '.join(unknown)}")
    if len(eps) != 1:
        raise ConfigError("an SOD run takes one --eps (the additive budget of adv-cloud and pgd)")
    dev = check_device(device)
    victim = load_sod_model(model).to(dev)
    data = load_sod_dataset(dataset)
    x, gt = data.x_test, data.m_test
    if n_samples is not None:
        x, gt = x[:n_samples], gt[:n_samples]
    x, gt = x.to(dev), gt.to(dev)
    knobs = dict(params.get("adv-cloud", {}))
    fields = [f for f in CloudAttackConfig.__dataclass_fields__ if f not in ("eps_n", "pgd_steps")]
    unknown = sorted(set(knobs) - set(fields)) + sorted(f"pgd.{k}" for k in params.get("pgd", {}) if k != "steps")
    if unknown:
        raise ConfigError(f"SOD runs take --param adv-cloud.NAME=VALUE with NAME in {', '.join(fields)} and "
                          f"--param pgd.steps=N; got {', '.join(unknown)}")
    if "steps" in params.get("pgd", {}):
        knobs["pgd_steps"] = params["pgd"]["steps"]
    cfg = CloudAttackConfig(eps_n=eps[0], **knobs)
    config: dict[str, Any] = {"task": "sod", "model": {"path": model, "name": Path(model).stem,
                                                       "sha256": file_sha256(model)},
                              "dataset": dataset, "n_samples": int(x.shape[0]), "attacks": sorted(attacks),
                              "attack": cfg.__dict__, "seed": seed, **device_entry(dev)}
    pre = None
    if defense:
        defended, config["defense"] = defend(victim, defense, device=dev)
        pre = defended.preprocess

    def compute():
        result = sod_robustness(victim, x, gt, defense=pre, cfg=cfg, attacks=attacks, seed=seed, progress=progress)
        record = make_record(config, name=f"{Path(model).stem}|{dataset}|sod", metrics=result,
                             cost=result["cost"], samples=[], device=str(dev))
        return record, result

    outcome = execute(config, compute, store=store, force=force)
    if outcome.skipped:
        err.print(f"[yellow]already in {store}; skipped, pass --force to rerun[/yellow]")
    elif wandb is not None:
        from advbench.tracking import WandbSink

        with WandbSink(name=outcome.record["name"], config=config, tags=["sod", *attacks], **wandb) as sink:
            sink.log_record(outcome.record)
    if as_json:
        sys.stdout.write(json.dumps({**outcome.record["metrics"], "config_hash": outcome.record["config_hash"],
                                     "skipped": outcome.skipped}) + "\n")
    else:
        print_sod_table(outcome.record)
        err.print(f"stored in {store}")

