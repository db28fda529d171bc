"""The salient-object-detection commands of the ``advbench`` console script: ``train-sod``.

Registered on :data:`advbench.cli.app` when :mod:`advbench.cli` is imported.  The SOD task is the victim side of
the adversarial cloud attack (Sun, Fu, Li et al., arXiv 2306.17431).
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

METRIC_COLUMNS = ("mae", "max_f", "mean_f", "adaptive_f", "s_measure", "max_e", "mean_e", "adaptive_e")


@app.command("train-sod")
def train_sod_cmd(
    dataset: str = typer.Option(..., "--dataset", help="SOD data set, e.g. synthetic-sod:n=200,size=64 or "
                                                       "eorssd:/data/EORSSD?size=128"),
    arch: str = typer.Option("unet-sod", "--arch", help="SOD architecture (unet-sod)"),
    out_path: Path = typer.Option(..., "--out", help="where to write the .safetensors checkpoint"),
    epochs: int = typer.Option(20, "--epochs"),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(3e-3, "--lr"),
    iou_weight: float = typer.Option(1.0, "--iou-weight", help="weight of the soft-IoU loss added to BCE (0: BCE)"),
    base: int | None = typer.Option(None, "--base", help="U-Net width (channels at full resolution, default 16)"),
    depth: int | None = typer.Option(None, "--depth", help="U-Net poolings (default 3; H, W divisible by 2**depth)"),
    augment: bool = typer.Option(True, "--augment/--no-augment", metavar="", help="random rotations and flips"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object on stdout"),
) -> None:
    """Train a salient-object-detection model (BCE + IoU, Adam) and save it as safetensors + JSON sidecar."""
    from advbench.datasets.sod import load_sod_dataset
    from advbench.devices import check_device
    from advbench.training.sod import save_sod_model, train_sod

    dev = check_device(device)
    if out_path.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors, got '{out_path}'")
    options = {k: v for k, v in (("base", base), ("depth", depth)) if v is not None}
    data = load_sod_dataset(dataset, seed=seed)
    model, summary = train_sod(data, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                               iou_weight=iou_weight, augment=augment, model_options=options, progress=True,
                               device=dev)
    path = save_sod_model(model, out_path, {"dataset": dataset, "training": summary})
    if as_json:
        sys.stdout.write(json.dumps({"checkpoint": str(path), **summary}) + "\n")
        return
    table = Table(title=f"{arch} on {dataset}: test set ({summary['n_test']} images)")
    table.add_column("model")
    for col in METRIC_COLUMNS:
        table.add_column(col, justify="right")
    for label, metrics in (("trained", summary["test_metrics"]), ("constant prior", summary["baseline_test_metrics"])):
        table.add_row(label, *(format_number(metrics[c]) for c in METRIC_COLUMNS))
    out.print(table)
    err.print(f"saved {path} ({arch}, {summary['n_train']} training images, final loss {summary['final_loss']:.3f}, "
              f"{summary['train_seconds']:.1f} s)")
