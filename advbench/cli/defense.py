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

from advbench.cli.app import app
from advbench.cli.options import err, split_csv
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
    from advbench.objectives import CLASSIFICATION, SOD

    if is_sod_checkpoint(victim):
        from advbench.datasets.sod import load_sod_dataset
        from advbench.training.sod import load_sod_model

        model = load_sod_model(victim)
        data = load_sod_dataset(dataset)
        x, y, task = data.x_train, data.m_train, SOD
    else:
        from advbench.datasets import load_dataset
        from advbench.models.loading import load_model

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
    kinds = split_csv(attack)
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
