"""The multi-task commands of the ``advbench`` console script: ``train-multitask`` and the multi-task branch of
``advbench run`` (:func:`run_multitask`).

Registered on :data:`advbench.cli.app` when :mod:`advbench.cli` is imported.  The models trained here are the
victims of the stealthy multi-task attack (Guo, Zhang, Li et al., arXiv 2411.17936; REFERENCE.md section 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from advbench.cli import _fmt, app, err, out
from advbench.errors import ConfigError


@app.command("train-multitask")
def train_multitask_cmd(
    dataset: str = typer.Option(..., "--dataset", help="multi-task data set, e.g. synthetic-multitask:n=240,size=64 "
                                                       "or nyuv2:/data/nyuv2?size=64"),
    tasks: str | None = typer.Option(None, "--tasks", help="comma-separated heads, e.g. seg,depth,normal "
                                                           "(default: every task of the data set)"),
    arch: str = typer.Option("mtl-unet", "--arch", help="multi-task architecture (mtl-unet)"),
    out_path: Path = typer.Option(..., "--out", help="where to write the .safetensors checkpoint"),
    epochs: int = typer.Option(25, "--epochs"),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(3e-3, "--lr"),
    base: int | None = typer.Option(None, "--base", help="trunk width (channels at full resolution, default 16)"),
    levels: int | None = typer.Option(None, "--levels", help="U-Net poolings (default 3; H, W divisible by "
                                                             "2**levels)"),
    augment: bool = typer.Option(True, "--augment/--no-augment", metavar="", help="random horizontal flips"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object on stdout"),
) -> None:
    """Train a multi-task model (segmentation, depth, normals; summed losses, Adam) and save it as safetensors."""
    from advbench.devices import check_device
    from advbench.multitask.data import load_multitask_dataset
    from advbench.multitask.tasks import check_tasks, get_task
    from advbench.multitask.training import save_multitask_model, train_multitask

    dev = check_device(device)
    if out_path.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got '{out_path}'")
    options = {k: v for k, v in (("base", base), ("levels", levels)) if v is not None}
    data = load_multitask_dataset(dataset, seed=seed)
    chosen = data.tasks if tasks is None else check_tasks(tasks, available=data.tasks, what="--tasks")
    model, summary = train_multitask(data, tasks=chosen, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr,
                                     seed=seed, augment=augment, model_options=options, progress=True, device=dev)
    path = save_multitask_model(model, out_path, {"dataset": dataset, "training": summary})
    if as_json:
        sys.stdout.write(json.dumps({"checkpoint": str(path), **summary}) + "\n")
        return
    table = Table(title=f"{arch} on {dataset}: test set ({summary['n_test']} images)")
    table.add_column("task")
    table.add_column("metric")
    table.add_column("trained", justify="right")
    table.add_column("constant baseline", justify="right")
    for task in summary["tasks"]:
        head = get_task(task)
        arrow = "higher is better" if head.higher_is_better else "lower is better"
        table.add_row(task, f"{head.metric} ({arrow})", _fmt(summary["test_metrics"][task]),
                      _fmt(summary["baseline_test_metrics"][task]))
    out.print(table)
    err.print(f"saved {path} ({arch}, heads {', '.join(summary['tasks'])}, {summary['n_train']} training images, "
              f"final loss {summary['final_loss']:.3f}, {summary['train_seconds']:.1f} s)")


def is_multitask_checkpoint(path: str) -> bool:
    """True for a multi-task model checkpoint (its metadata says ``task: multitask``)."""
    from advbench.checkpoints import read_metadata

    p = Path(path)
    return p.is_file() and read_metadata(p).get("task") == "multitask"


def print_multitask_table(record: dict[str, Any]) -> None:
    """Per task: clean and attacked metric, change, degradation and the learned weight / multiplier."""
    m = record["metrics"]
    title = f"{record['config']['attack']['name']} on {record['config']['model']['name']}"
    if m.get("target_task"):
        title += (f" (target {m['target_task']}; stealth success {m['stealth_success_rate']:.3f} at margin "
                  f"{m['margin']:g}, tolerance {m['tolerance']:g})")
    table = Table(title=title)
    for col in ("task", "clean", "attacked", "change", "degradation", "weight"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task in m["tasks"]:
        c = m["change"][task]
        table.add_row(task, _fmt(m["clean"][task]), _fmt(m["adversarial"][task]), _fmt(c["change"]),
                      _fmt(c["degradation"]), _fmt(m["weights"][task]))
    out.print(table)


def run_multitask(model: str, dataset: str, attack: str, norm: str, eps: list[float], n_samples: int | None,
                  params: dict[str, Any], target_task: str | None, margin: float, tolerance: float, seed: int,
                  store: Path, force: bool, as_json: bool, wandb: dict[str, Any] | None = None,
                  device: str = "cpu", progress: bool = True) -> None:
    """``advbench run`` on a multi-task checkpoint: one multi-task attack, metrics per task, stealth success.
    The model and the images move to ``device``; the metrics are summed on the CPU.  ``progress`` shows the
    attack steps as a bar on stderr."""
    from advbench.attacks.multitask import create_multitask_attack
    from advbench.checkpoints import file_sha256
    from advbench.devices import check_device
    from advbench.multitask.data import load_multitask_dataset
    from advbench.multitask.robustness import multitask_robustness
    from advbench.multitask.training import load_multitask_model
    from advbench.runner import device_entry, execute, make_record

    if len(eps) != 1:
        raise ConfigError("a multi-task run takes one --eps")
    if margin < 0 or tolerance < 0:
        raise ConfigError(f"--margin and --tolerance must be >= 0, got {margin} and {tolerance}")
    dev = check_device(device)
    net = load_multitask_model(model).to(dev)
    if target_task is not None and target_task not in net.tasks:
        raise ConfigError(f"--target-task '{target_task}' is not one of the model's tasks: {', '.join(net.tasks)}")
    attack_obj = create_multitask_attack(attack, norm=norm, eps=eps[0], target_task=target_task, **params)
    data = load_multitask_dataset(dataset, seed=seed)
    missing = [t for t in net.tasks if t not in data.tasks]
    if missing:
        raise ConfigError(f"data set {dataset} has no ground truth for the model's task(s) {', '.join(missing)}")
    n = data.x_test.shape[0] if n_samples is None else min(n_samples, data.x_test.shape[0])
    x = data.x_test[:n].to(dev)
    targets = {t: data.targets_test[t][:n].to(dev) for t in net.tasks}
    config = {"task": "multitask", "model": {"path": model, "name": Path(model).stem, "sha256": file_sha256(model)},
              "dataset": dataset, "n_samples": n, "attack": attack_obj.hyperparameters(), "margin": margin,
              "tolerance": tolerance, "seed": seed, **device_entry(dev)}

    def compute():
        result = multitask_robustness(net, x, targets, attack_obj, margin=margin, tolerance=tolerance,
                                      progress=progress)
        record = make_record(config, name=f"{Path(model).stem}|{dataset}|{attack}", metrics=result["metrics"],
                             cost=result["cost"], samples=result["samples"], device=str(dev))
        return record, result

    outcome = execute(config, compute, store=store, force=force)
    record = outcome.record
    if outcome.skipped:
        err.print(f"[yellow]already in {store}; skipped, pass --force to rerun[/yellow]")
    elif wandb is not None:
        from advbench.tracking import WandbSink

        with WandbSink(name=record["name"], config=config, tags=["multitask", attack], **wandb) as sink:
            sink.log_record(record)
    if as_json:
        sys.stdout.write(json.dumps({**record["metrics"], "cost": record["cost"], "config_hash": record["config_hash"],
                                     "skipped": outcome.skipped}) + "\n")
    else:
        print_multitask_table(record)
        err.print(f"stored in {store}")
