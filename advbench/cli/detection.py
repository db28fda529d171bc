"""The detection commands of the ``advbench`` console script: ``train-detector`` and ``detect-attack``.

Registered on :data:`advbench.cli.app` when :mod:`advbench.cli` is imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from advbench.cli.app import app
from advbench.cli.options import DEFAULT_STORE, WandbMode, err, out, split_csv, wandb_options
from advbench.errors import ConfigError


@app.command("train-detector")
def train_detector_cmd(
    dataset: str = typer.Option(..., "--dataset", help="detection data set, e.g. evd4uav:/data/evd"),
    arch: str = typer.Option("fcos-mnv3", "--arch", help="fcos-mnv3 or fasterrcnn-mnv3"),
    out_path: Path = typer.Option(..., "--out", help="where to write the .safetensors checkpoint"),
    epochs: int = typer.Option(60, "--epochs"),
    batch_size: int = typer.Option(4, "--batch-size"),
    lr: float = typer.Option(2e-3, "--lr"),
    augment: str = typer.Option("dihedral", "--augment", help="augmentation preset: none, flip, dihedral, "
                                                              "photometric, aerial"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object on stdout"),
) -> None:
    """Train a small detector from scratch (no download) and save it as safetensors + JSON sidecar."""
    from advbench.datasets.detection import load_detection_dataset
    from advbench.devices import check_device
    from advbench.training.detection import DetectorTrainConfig, save_detector, train_detector

    dev = check_device(device)
    samples = load_detection_dataset(dataset)
    cfg = DetectorTrainConfig(arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                              augment=augment)
    det, summary = train_detector(samples, cfg, progress=True, device=dev)
    path = save_detector(det, out_path, {"dataset": dataset, "training": summary})
    if as_json:
        sys.stdout.write(json.dumps({"checkpoint": str(path), **summary}) + "\n")
    else:
        err.print(f"saved {path} ({arch}, {len(samples)} images, final loss {summary['final_loss']:.3f})")


def _patch_params(items: list[str]) -> dict[str, Any]:
    """``--param steps=50`` -> ``{'steps': 50}`` (values parsed as JSON when possible)."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param '{item}' must look like NAME=VALUE, e.g. steps=50 or fraction=[0.5,0.8]")
        try:
            params[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip()] = raw
    return params


@app.command("detect-attack")
def detect_attack_cmd(
    dataset: str = typer.Option(..., "--dataset", help="detection data set, e.g. evd4uav:/data/evd?snow=false"),
    detector: str = typer.Option(..., "--detector", help="checkpoint path, or an architecture to train here first"),
    attack: str = typer.Option(..., "--attack", help="patch-whitebox, patch-transfer, patch-random-search, "
                                                     "patch-minmax"),
    surrogate: str | None = typer.Option(None, "--surrogate", help="patch-transfer: surrogate checkpoint/arch"),
    detectors: str | None = typer.Option(None, "--detectors", help="patch-minmax: more detectors as domains"),
    steps: int | None = typer.Option(None, "--steps", help="optimisation steps (gradient attacks)"),
    queries: int | None = typer.Option(None, "--queries", help="patch-random-search: detector query budget"),
    patch_size: int | None = typer.Option(None, "--patch-size", help="patch resolution in texels"),
    param: list[str] = typer.Option([], "--param", help="attack hyperparameter NAME=VALUE, e.g. tv_weight=1.0"),
    train_fraction: float = typer.Option(0.5, "--train-fraction", help="share of each altitude to learn on"),
    patch_altitudes: str | None = typer.Option(None, "--patch-altitudes",
                                               help="learn the patch on these altitudes only, e.g. 90m "
                                                    "(every altitude is still measured)"),
    score_threshold: float = typer.Option(0.5, "--score-threshold", help="a detection counts from this score"),
    max_images: int | None = typer.Option(None, "--max-images", help="use a seeded subset of the images"),
    detector_epochs: int = typer.Option(60, "--detector-epochs", help="epochs when --detector names an arch"),
    detector_arch: str | None = typer.Option(None, "--detector-arch", help="architecture of bare .pt/.pth weights "
                                                                          "(fcos-mnv3, fasterrcnn-mnv3)"),
    image_size: str | None = typer.Option(None, "--image-size", help="WxH the bare weights were trained at"),
    seed: int = typer.Option(0, "--seed"),
    attack_seed: int | None = typer.Option(None, "--attack-seed", help="seed of the generator the patch attack "
                                                                       "draws from (default: --seed)"),
    report: Path | None = typer.Option(None, "--report", help="folder for report.json, patch.png, grid.png"),
    store: Path = typer.Option(Path(DEFAULT_STORE), "--store", help="SQLite results store"),
    force: bool = typer.Option(False, "--force", metavar="", help="rerun even if this config is already stored"),
    wandb: bool = typer.Option(False, "--wandb", metavar="", help="log to Weights & Biases"),
    wandb_project: str = typer.Option("advbench", "--wandb-project"),
    wandb_mode: WandbMode | None = typer.Option(None, "--wandb-mode"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object on stdout"),
) -> None:
    """Learn an adversarial roof patch and measure ASR and AP per altitude, colour and type."""
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.engine import run as run_pipeline

    params = _patch_params(param)
    for name, value in (("steps", steps), ("queries", queries), ("patch_size", patch_size)):
        if value is not None:
            params[name] = value
    options: dict[str, Any] = {"train_fraction": train_fraction, "score_threshold": score_threshold,
                               "detector_epochs": detector_epochs}
    for key, value in (("surrogate", surrogate), ("detector_arch", detector_arch), ("image_size", image_size),
                       ("patch_altitudes", patch_altitudes), ("attack_seed", attack_seed)):
        if value is not None:
            options[key] = value
    config = RunConfig.build(models=[detector, *split_csv(detectors or "")], dataset=dataset, attacks=[attack],
                             eps=[0.0], n_samples=max_images, seed=seed, device=device, experiment="detection",
                             attack_params={attack: params} if params else {}, options=options, batch_size=64)
    wandb_opts = wandb_options(wandb, wandb_mode, wandb_project, store)
    outcome = run_pipeline(config, store=store, force=force, wandb=wandb_opts, progress=True)
    record = outcome.record
    if outcome.skipped:
        err.print(f"[yellow]already in {store} (config {record.config_hash[:12]}); skipped, pass --force to "
                  "rerun[/yellow]")
        if report is not None:
            err.print("[yellow]--report needs the images of a fresh run: pass --force[/yellow]")
    elif report is not None:
        err.print(f"report written to {outcome.experiment.write_report(report, record)}")
    if as_json:
        payload = {**record.metrics, "cost": record.cost, "config_hash": record.config_hash,
                   "skipped": outcome.skipped, "run_id": record.id}
        payload.pop("weight_trace", None)
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        out.print(outcome.experiment.render(record) if outcome.experiment else _render(record))
        err.print(f"stored in {store}")


def _render(record: Any) -> Any:
    from advbench.detection.experiment import detection_table

    return detection_table(record)
