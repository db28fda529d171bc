"""The detection commands of the ``advbench`` console script: ``train-detector`` and ``detect-attack``.

Registered on :data:`advbench.cli.app` when :mod:`advbench.cli` is imported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from advbench.cli import DEFAULT_STORE, WandbMode, _fmt, _split, app, err, out
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
    from advbench.detection.training import DetectorTrainConfig, save_detector, train_detector
    from advbench.devices import check_device

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


def print_detect_table(record: dict[str, Any]) -> None:
    """ASR and AP50 per altitude (and overall), with the random-patch control."""
    m = record["metrics"]
    table = Table(title=f"{record['config']['attack']['name']} on {record['config']['detector']['arch']}")
    for col in ("altitude", "vehicles found clean", "ASR", "control ASR", "AP50 clean", "AP50 patched", "weight"):
        table.add_column(col, justify="right")
    weights = m.get("weights") or {}
    counts = m["counts"]["by_altitude"]
    for alt in counts:
        table.add_row(alt, str(counts[alt]["detected_clean"]), _fmt(m["asr_by_altitude"].get(alt)),
                      _fmt(m["control_asr_by_altitude"].get(alt)),
                      _fmt(m["ap_clean_by_altitude"].get(alt, {}).get("AP50")),
                      _fmt(m["ap_adversarial_by_altitude"].get(alt, {}).get("AP50")), _fmt(weights.get(alt)))
    table.add_row("all", str(m["counts"]["overall"]["detected_clean"]), _fmt(m["asr"]), _fmt(m["control_asr"]),
                  _fmt(m["ap_clean"]["AP50"]), _fmt(m["ap_adversarial"]["AP50"]), "")
    out.print(table)


def write_report(directory: Path, record: dict[str, Any], result: Any) -> Path:
    """``report.json``, ``patch.png`` and ``grid.png`` (clean vs patched detections) under ``directory``."""
    from PIL import Image

    from advbench.detection.report import save_detection_grid, write_png
    from advbench.store import atomic_write_text

    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "report.json", json.dumps(record, indent=2, default=str) + "\n")
    patch = (result.fit.patch.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    side = 8 * max(patch.shape[:2])
    write_png(Image.fromarray(patch).resize((side, side), Image.NEAREST), directory / "patch.png")
    ev = result.evaluation
    save_detection_grid(result.test_samples, result.test_images, ev.clean, ev.patched_images, ev.adversarial,
                        directory / "grid.png", score_threshold=record["config"]["score_threshold"])
    return directory


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
    from advbench.detection.experiment import DetectAttackSpec, run_detect_attack

    params = _patch_params(param)
    for name, value in (("steps", steps), ("queries", queries), ("patch_size", patch_size)):
        if value is not None:
            params[name] = value
    size = None
    if image_size is not None:
        w, sep, h = image_size.lower().partition("x")
        if not sep or not w.strip().isdigit() or not h.strip().isdigit():
            raise ConfigError(f"--image-size must look like 256x192 (width x height), got '{image_size}'")
        size = (int(w), int(h))
    spec = DetectAttackSpec(dataset=dataset, detector=detector, attack=attack, params=params, surrogate=surrogate,
                            extra_detectors=_split(detectors or ""), train_fraction=train_fraction,
                            score_threshold=score_threshold, seed=seed, max_images=max_images,
                            detector_epochs=detector_epochs, detector_arch=detector_arch, image_size=size,
                            patch_altitudes=_split(patch_altitudes) if patch_altitudes is not None else None,
                            device=device)
    outcome = run_detect_attack(spec, store=store, force=force, progress=True)
    record = outcome.record
    if outcome.skipped:
        err.print(f"[yellow]already in {store} (config {record['config_hash'][:12]}); skipped, pass --force to "
                  "rerun[/yellow]")
        if report is not None or wandb:
            err.print("[yellow]--report and --wandb need the images of a fresh run: pass --force[/yellow]")
    elif report is not None:
        err.print(f"report written to {write_report(report, record, outcome.result)}")
    if wandb and not outcome.skipped:
        _log_detection_to_wandb(record, outcome.result, store, wandb_project, wandb_mode)
    if as_json:
        payload = {**record["metrics"], "cost": record["cost"], "config_hash": record["config_hash"],
                   "skipped": outcome.skipped, "run_id": record.get("id")}
        payload.pop("weight_trace", None)
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        print_detect_table(record)
        err.print(f"stored in {store}")


def _log_detection_to_wandb(record: dict[str, Any], result: Any, store: Path, project: str,
                            mode: WandbMode | None) -> None:
    import torch

    from advbench.cli import _wandb_options
    from advbench.tracking import WandbSink

    options = _wandb_options(True, mode, project, store)
    images = None
    clean, patched = result.test_images[:8], result.evaluation.patched_images[:8]
    if clean and len({tuple(t.shape) for t in clean}) == 1:
        images = {"clean": torch.stack(clean), "adversarial": torch.stack(patched)}
    tags = ["detection", record["config"]["attack"]["name"]]
    with WandbSink(name=record["name"], config=record["config"], tags=tags, **options) as sink:
        sink.log_record(record, images=images)
        if "weight_trace" in record["metrics"]:
            sink.log_weight_trace(record["metrics"]["weight_trace"], list(record["metrics"]["weights"]))
