"""``advbench run`` and ``compare``: parse the flags into run configs, hand them to the pipeline, print."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from advbench.cli.app import app
from advbench.cli.options import (
    DATASET_HELP,
    DEFAULT_STORE,
    MODEL_HELP,
    Executor,
    Norm,
    WandbMode,
    accepts_param,
    err,
    out,
    parse_floats,
    parse_params,
    print_run_table,
    renderer_for,
    split_csv,
    wandb_options,
)
from advbench.errors import ConfigError


@app.command()
def run(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    dataset: str = typer.Option(..., "--dataset", help=DATASET_HELP),
    attack: str = typer.Option("pgd", "--attack", help="attack name(s), comma separated: run as a cascade"),
    norm: Norm = typer.Option(Norm.linf, "--norm"),
    eps: str = typer.Option("8/255", "--eps", help="one or more budgets, comma separated; 8/255 style allowed"),
    n_samples: int = typer.Option(500, "--n-samples", help="how many samples to evaluate (see --selection)"),
    selection: str = typer.Option("balanced", "--selection", help="balanced: a seeded class-balanced subset "
                                  "(--seed); first: the first N in the data set's fixed order"),
    samples: Path | None = typer.Option(None, "--samples", help="a file of sample indices or file names to "
                                        "evaluate (one per line, or a JSON list), like RobustBench's fixed subsets"),
    num_classes: int | None = typer.Option(None, "--num-classes", help="model outputs (replaces the sidecar)"),
    input_size: int | None = typer.Option(None, "--input-size", help="model input side in pixels, e.g. 224"),
    mean: str | None = typer.Option(None, "--mean", help="per-channel normalization mean, e.g. 0.485,0.456,0.406"),
    std: str | None = typer.Option(None, "--std", help="per-channel normalization std, e.g. 0.229,0.224,0.225"),
    interpolation: str | None = typer.Option(None, "--interpolation", help="resize interpolation: bilinear, "
                                             "bicubic, nearest, lanczos"),
    crop_pct: float | None = typer.Option(None, "--crop-pct", help="centre-crop fraction: resize the shorter "
                                          "side to input-size / crop-pct, then crop (0.875: 256 -> 224)"),
    dtype: str | None = typer.Option(None, "--dtype", help="evaluate in float32 (default), float16, bfloat16 "
                                     "or auto (the checkpoint's own dtype)"),
    class_map: Path | None = typer.Option(None, "--class-map", help="map data set classes to model outputs "
                                          "(lines 'CLASS_NAME INDEX' or JSON) to evaluate a class subset"),
    steps: int | None = typer.Option(None, "--steps", help="iterations for every attack that has steps"),
    gamma: float | None = typer.Option(None, "--gamma", help="min-max: weight regulariser (inf = averaging)"),
    alpha: float | None = typer.Option(None, "--alpha", help="min-max: inverse step size of the perturbation"),
    beta: float | None = typer.Option(None, "--beta", help="min-max: inverse step size of the domain weights"),
    loss: str | None = typer.Option(None, "--loss", help="cw or ce, for attacks that take a loss"),
    kappa: float | None = typer.Option(None, "--kappa", help="C&W margin confidence"),
    k: int | None = typer.Option(None, "--k", help="universal: inputs per shared perturbation"),
    transforms: str | None = typer.Option(None, "--transforms", help="minmax-transform/eot families, comma list"),
    param: list[str] = typer.Option([], "--param", help="per-attack hyperparameter, e.g. square.n_queries=1000"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(256, "--batch-size"),
    store: Path = typer.Option(Path(DEFAULT_STORE), "--store", help="SQLite results store"),
    force: bool = typer.Option(False, "--force", metavar="", help="rerun even if this config is already stored"),
    wandb: bool = typer.Option(False, "--wandb", metavar="", help="log to Weights & Biases"),
    wandb_project: str = typer.Option("advbench", "--wandb-project"),
    wandb_mode: WandbMode | None = typer.Option(None, "--wandb-mode"),
    device: str = typer.Option("cpu", "--device"),
    target_task: str | None = typer.Option(None, "--target-task", help="multi-task models: the task to break"),
    margin: float = typer.Option(0.1, "--margin", help="multi-task: relative worsening that counts as broken"),
    tolerance: float = typer.Option(0.05, "--tolerance", help="multi-task: relative worsening allowed elsewhere"),
    defense: str | None = typer.Option(None, "--defense", help="preprocessing defense in front of the model: "
                                       "jpeg[:quality=75], bitdepth[:bits=4], median[:k=3], defensenet:CKPT"),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object on stdout"),
    shard: str | None = typer.Option(None, "--shard", help="run shard I of N (e.g. 2/4): a fixed block of the "
                                     "batches; shards of one config merge into one record"),
    executor: Executor = typer.Option(Executor.local, "--executor", help="local, or dask: batches on Dask workers "
                                      "(one per GPU with dask-cuda)"),
    scheduler: str | None = typer.Option(None, "--scheduler", help="address of an existing Dask scheduler"),
    workers: int | None = typer.Option(None, "--workers", min=1,
                                       help="local Dask workers (default: one per core, or one per GPU)"),
    loader_workers: int | None = typer.Option(None, "--loader-workers", min=0,
                                              help="DataLoader processes that decode images (default: up to 4 "
                                              "for image folders, 0 for in-memory sets)"),
) -> None:
    """Attack one or more models with an attack cascade at one or more eps; store and print the result.

    The evaluation streams in batches, commits each finished batch to the store (a killed run resumes where it
    stopped when rerun with the same flags), and can be split: --shard I/N runs one deterministic part, and
    --executor dask runs the batches on Dask workers."""
    from advbench.pipeline.request import build_run_configs
    from advbench.pipeline.shards import parse_shard

    configs = build_run_configs(
        models=split_csv(model), dataset=dataset, attacks=split_csv(attack), eps=eps, norm=norm.value,
        n_samples=n_samples, selection=selection, samples=str(samples) if samples else None,
        class_map=str(class_map) if class_map else None,
        seed=seed, batch_size=batch_size, params=parse_params(param), device=device, defense=defense,
        model_flags={"num_classes": num_classes, "input_size": input_size, "mean": parse_floats(mean, "--mean"),
                     "std": parse_floats(std, "--std"), "interpolation": interpolation, "crop_pct": crop_pct,
                     "dtype": dtype},
        knobs={"steps": steps, "gamma": gamma, "alpha": alpha, "beta": beta, "loss": loss, "kappa": kappa, "k": k,
               "transforms": transforms},
        multitask={"target_task": target_task, "margin": margin, "tolerance": tolerance}, notes=err.print)
    _run_configs(configs, store=store, force=force, shard=parse_shard(shard), executor=executor.value,
                 scheduler=scheduler, workers=workers, loader_workers=loader_workers,
                 wandb=wandb_options(wandb, wandb_mode, wandb_project, store), as_json=as_json)


def _run_configs(configs: list[Any], *, store: Path, force: bool, shard: tuple[int, int], executor: str,
                 scheduler: str | None, workers: int | None, loader_workers: int | None,
                 wandb: dict[str, Any] | None, as_json: bool) -> None:
    """Run each config through the pipeline, then print the tables (or one JSON object)."""
    from advbench.pipeline.engine import run as run_pipeline

    outcomes = [run_pipeline(c, store=store, force=force, shard=shard, executor=executor, scheduler=scheduler,
                             workers=workers, loader_workers=loader_workers, wandb=wandb, progress=True)
                for c in configs]
    for config, outcome in zip(configs, outcomes, strict=True):
        if outcome.skipped:
            err.print(f"[yellow]{','.join(config.models)}: already in {store} (config {outcome.config_hash[:12]}); "
                      "skipped, pass --force to rerun[/yellow]")
        elif outcome.record is None:
            err.print(f"{','.join(config.models)}: shard {shard[0]}/{shard[1]} done; {outcome.committed} of "
                      f"{outcome.total} batches of run {outcome.config_hash[:12]} are in {store}. The record is "
                      "written when the last shard ends (run the others with the same flags and --shard I/N)",
                      highlight=False)
        else:
            for warning in outcome.record.metrics.get("warnings", []):
                err.print(f"[red]warning[/red] {warning['name']}: {warning['message']}")
    if as_json:
        payloads = [_json_payload(o.record.as_dict(samples=False), o.skipped) if o.record is not None else
                    {"complete": False, "config_hash": o.config_hash, "committed": o.committed, "total": o.total}
                    for o in outcomes]
        sys.stdout.write(json.dumps(payloads[0] if len(payloads) == 1 else {"runs": payloads}) + "\n")
        return
    done = [o.record for o in outcomes if o.record is not None]
    classifier = [r for r in done if r.experiment in ("classifier", "minmax")]
    if classifier:
        print_run_table([r.as_dict(samples=False) for r in classifier])
    for record in done:
        if record.experiment not in ("classifier", "minmax"):
            out.print(renderer_for(record).render(record))
    if done:
        err.print(f"stored in {store}")


def _json_payload(record: dict[str, Any], skipped: bool) -> dict[str, Any]:
    """The metrics plus everything needed to compare the run: the resolved config (attack hyperparameters,
    seed, sample selection, preprocessing, dtype, device) and the code and library versions."""
    payload = dict(record["metrics"])
    config = record["config"]
    data = config.get("data") or {}
    payload.update({"cost": record.get("cost", {}), "config_hash": record["config_hash"],
                    "model": config["model"].get("name"), "dataset": config["dataset"],
                    "skipped": skipped, "run_id": record.get("id"),
                    "config": config, "attacks": config.get("attacks"), "seed": config.get("seed"),
                    "selection": data.get("selection"), "preprocessing": data.get("preprocessing"),
                    "dtype": config["model"].get("eval_dtype", "float32"), "device": record.get("device"),
                    "code_version": record.get("code_version"), "versions": record.get("versions")})
    return payload


@app.command()
def compare(
    checkpoints: list[Path] = typer.Argument(..., help="the dense parent first, then its compressed children"),
    dataset: str = typer.Option(..., "--dataset"),
    attack: str = typer.Option("pgd", "--attack"),
    norm: Norm = typer.Option(Norm.linf, "--norm"),
    eps: str = typer.Option("0.05,0.1", "--eps"),
    n_samples: int = typer.Option(500, "--n-samples"),
    steps: int | None = typer.Option(None, "--steps"),
    seed: int = typer.Option(0, "--seed"),
    store: Path = typer.Option(Path(DEFAULT_STORE), "--store"),
    plot: Path | None = typer.Option(None, "--plot", help="PNG path (default: next to the store)"),
    wandb: bool = typer.Option(False, "--wandb", metavar=""),
    wandb_project: str = typer.Option("advbench", "--wandb-project"),
    as_json: bool = typer.Option(False, "--json", metavar=""),
) -> None:
    """Dense vs compressed: robust accuracy per eps, ASR, transfer ASR both ways, worst per-class drop,
    compression and CPU latency per model and compression family, as one table, a robust-accuracy-vs-eps plot and
    a robust-accuracy-vs-compression plot per family (the Pareto front); the comparison is one run in the store.
    A nested checkpoint's levels are PATH?level=K."""
    from advbench.experiments.compare import plot_comparison, plot_pareto
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.engine import run as run_pipeline

    if len(checkpoints) < 2:
        raise ConfigError("compare needs the dense parent and at least one compressed child")
    attacks = split_csv(attack)
    params: dict[str, dict[str, Any]] = {}
    if steps is not None:
        for name in attacks:
            if accepts_param(name, "steps"):
                params.setdefault(name, {})["steps"] = steps
    config = RunConfig.build(models=[str(c) for c in checkpoints], dataset=dataset, attacks=attacks, eps=eps,
                             norm=norm.value, n_samples=n_samples, attack_params=params, seed=seed,
                             experiment="compare")
    outcome = run_pipeline(config, store=store, wandb=wandb_options(wandb, None, wandb_project, store),
                           progress=True)
    report = dict(outcome.record.metrics)
    png = plot_comparison(report, plot or store.resolve().parent / "compare.png")
    report["plot"] = str(png)
    report["pareto_plot"] = str(plot_pareto(report, png.with_name(png.stem + "-pareto.png")))
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    out.print(renderer_for(outcome.record).render(outcome.record))
    err.print(f"plots: {png}, {report['pareto_plot']}; run stored in {store}")
