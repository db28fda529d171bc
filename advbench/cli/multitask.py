"""The multi-task commands of the ``advbench`` console script: ``train-multitask`` and the multi-task branch of
``advbench run`` (:func:`run_multitask`).

Registered on :data:`advbench.cli.app` when :mod:`advbench.cli` is imported.  The models trained here are the
victims of the stealthy multi-task attack (Guo, Zhang, Li et al., arXiv 2411.17936).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from advbench.cli.app import app
from advbench.cli.options import err, out
from advbench.errors import ConfigError
from advbench.pipeline.tables import fmt as format_number


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
    from advbench.datasets.multitask import load_multitask_dataset
    from advbench.devices import check_device
    from advbench.models.task_heads import check_tasks, get_task
    from advbench.training.multitask import save_multitask_model, train_multitask

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
        table.add_row(task, f"{head.metric} ({arrow})", format_number(summary["test_metrics"][task]),
                      format_number(summary["baseline_test_metrics"][task]))
    out.print(table)
    err.print(f"saved {path} ({arch}, heads {', '.join(summary['tasks'])}, {summary['n_train']} training images, "
              f"final loss {summary['final_loss']:.3f}, {summary['train_seconds']:.1f} s)")
