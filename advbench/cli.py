"""The ``advbench`` console script: a thin typer layer over the library.

Human-readable tables go to stdout; progress bars and log messages go to stderr; with ``--json`` the
only thing on stdout is one JSON object.  Every user error ends in a one-line message and exit code 2.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from advbench.errors import AdvbenchError, ConfigError
from advbench.sanity import SanityWarning

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Adversarial attacks and robustness benchmarks.")
results_app = typer.Typer(no_args_is_help=True, help="Inspect and export the results store.")
app.add_typer(results_app, name="results")
leaderboard_app = typer.Typer(no_args_is_help=True, help="Build and render leaderboards from the results store.")
app.add_typer(leaderboard_app, name="leaderboard")
data_app = typer.Typer(no_args_is_help=True, help="Inspect, export and generate detection data sets.")
app.add_typer(data_app, name="data")
out = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("advbench")

MODEL_HELP = (
    "checkpoint path(s) or model spec(s), comma separated: model.safetensors (with its JSON sidecar); "
    "timm:NAME[?weights=PATH&ema=true]; torchvision:NAME[?weights=PATH]; "
    "robustbench:NAME[?dataset=cifar10&threat=Linf&model_dir=DIR]; ARCH?weights=PATH (e.g. resnet20, wrn-28-10); "
    "torchscript:PATH; py:FILE.py:FACTORY[?weights=PATH] (this imports and runs your own Python file). "
    "Options: quantized=dynamic|static (torch.ao int8 weights), surrogate=PATH or gradients=bpda (gradients "
    "for int8 models). Nothing is ever downloaded")
DATASET_HELP = (
    "digits, mnist5k, cifar10:/path, cifar100:/path (python layout; only the test batch is read), "
    "imagefolder:/path (class subfolders, or val/ or test/ inside; never split), synthetic; "
    "see `advbench list datasets`")
DEFAULT_STORE = "advbench-results.db"


def _print_version(value: bool) -> None:
    if value:
        from advbench import __version__
        from advbench.records import code_version

        out.print(f"advbench {__version__} ({code_version()})", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", metavar="", is_eager=True, callback=_print_version,
                                       help="print the version and exit")) -> None:
    """Adversarial attacks and robustness benchmarks."""


class Listable(str, Enum):
    attacks = "attacks"
    models = "models"
    datasets = "datasets"
    defenses = "defenses"
    experiments = "experiments"
    detectors = "detectors"
    patch_attacks = "patch-attacks"
    multitask_attacks = "multitask-attacks"


class Norm(str, Enum):
    linf = "linf"
    l2 = "l2"
    l1 = "l1"
    l0 = "l0"


class ExportFormat(str, Enum):
    csv = "csv"
    json = "json"


class WandbMode(str, Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


def split_csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def format_number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


@app.command("list")
def list_cmd(what: Listable = typer.Argument(..., help="attacks, models, datasets, defenses or experiments (and "
                                                      "the filters detectors, patch-attacks, multitask-attacks)"),
             names_only: bool = typer.Option(False, "--names", help="one name per line, nothing else")) -> None:
    """List every registered entry of one kind, with the task it serves (generated from the registries)."""
    from advbench.listing import listing_rows

    rows = listing_rows(what.value)
    if names_only:
        for row in rows:
            out.print(row["name"], highlight=False, markup=False)
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = Table(*columns)
    for row in rows:
        table.add_row(*(row.get(col, "") for col in columns))
    out.print(table)


@app.command()
def train(
    model: str = typer.Option(..., "--model", help="architecture, e.g. small_cnn, lenet5, timm:resnet18"),
    dataset: str = typer.Option(..., "--dataset", help="digits, mnist5k, cifar10:/path, imagefolder:/path, ..."),
    out_path: Path = typer.Option(..., "--out", help="where to write the .safetensors checkpoint"),
    epochs: int = typer.Option(10, "--epochs"),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    adversarial: str | None = typer.Option(None, "--adversarial", help="'pgd' (Madry et al.), or 'gat-minmax', "
                                           "'gat-max', 'gat-avg' over the --gat-types perturbation types"),
    gat_types: str = typer.Option("linf:0.1,l2:1.0", "--gat-types", help="perturbation types NORM:EPS,..."),
    adv_eps: str = typer.Option("0.1", "--adv-eps", help="training eps (fractions such as 8/255 allowed)"),
    adv_norm: Norm = typer.Option(Norm.linf, "--adv-norm"),
    adv_steps: int = typer.Option(10, "--adv-steps"),
    augment: bool = typer.Option(False, "--augment", metavar="", help="albumentations training augmentation"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
) -> None:
    """Train a classifier (standard or PGD adversarial) and save it as safetensors + JSON sidecar."""
    from advbench.devices import check_device
    from advbench.threat import parse_eps
    from advbench.training import TrainConfig, train_and_save

    dev = check_device(device)
    cfg = TrainConfig(arch=model, dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      adversarial=adversarial, adv_norm=adv_norm.value, adv_eps=parse_eps(adv_eps),
                      adv_steps=adv_steps, augment=augment, gat_types=gat_types)
    meta = train_and_save(cfg, out_path, device=dev)
    err.print(f"saved {out_path} (test accuracy {meta['test_accuracy']:.4f})")


def _parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--param pgd.steps=20`` → ``{'pgd': {'steps': 20}}`` (values parsed as JSON when possible)."""
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        attack, dot, name = key.partition(".")
        if not sep or not dot or not attack or not name:
            raise ConfigError(f"--param '{item}' must look like ATTACK.NAME=VALUE, e.g. pgd.steps=20")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(attack, {})[name] = value
    return params


def _accepts(attack: str, pname: str) -> bool:
    from advbench.pipeline.request import accepts

    return accepts(attack, pname)


def print_run_table(records: list[dict[str, Any]], title: str = "robustness") -> None:
    """Print the tables of run records (see :mod:`advbench.pipeline.tables`)."""
    from advbench.pipeline.tables import run_tables

    for table in run_tables(records, title=title):
        out.print(table)


class Executor(str, Enum):
    local = "local"
    dask = "dask"


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
        seed=seed, batch_size=batch_size, params=_parse_params(param), device=device, defense=defense,
        model_flags={"num_classes": num_classes, "input_size": input_size, "mean": _floats(mean, "--mean"),
                     "std": _floats(std, "--std"), "interpolation": interpolation, "crop_pct": crop_pct,
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
            out.print(_renderer(record).render(record))
    if done:
        err.print(f"stored in {store}")


def _renderer(record: Any) -> Any:
    """The experiment that renders ``record`` (rendering needs no resolve)."""
    import advbench.experiments  # noqa: F401 - registers the experiments
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.experiment import EXPERIMENTS

    placeholder = RunConfig(models=["-"], dataset="-", attacks=["-"], eps=[0.0])
    return EXPERIMENTS.get(record.experiment)(placeholder)


def wandb_options(enabled: bool, mode: WandbMode | None, project: str, store: Path) -> dict[str, Any] | None:
    """W&B options for a run, or None when ``--wandb`` is off.  The mode is resolved (online only with an API
    key) and W&B's local files go next to the results store (``<store dir>/wandb``), not into the working
    directory."""
    if not enabled:
        return None
    from advbench.tracking import resolve_wandb_mode

    resolved, message = resolve_wandb_mode(mode.value if mode else None, dir=store.resolve().parent)
    if message:
        err.print(message)
    return {"project": project, "mode": resolved, "dir": str(store.resolve().parent)}


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


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in split_csv(text))
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, one per channel, e.g. 0.485,0.456,0.406; got "
                          f"'{text}'") from None



class Structure(str, Enum):
    unstructured = "unstructured"
    filter = "filter"
    channel = "channel"


class PruneMethod(str, Enum):
    admm = "admm"
    magnitude = "magnitude"


@app.command()
def prune(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="the dense parent (.safetensors)"),
    dataset: str = typer.Option(..., "--dataset"),
    out_path: Path = typer.Option(..., "--out", help="the pruned child (.safetensors)"),
    method: PruneMethod = typer.Option(PruneMethod.admm, "--method"),
    structure: Structure = typer.Option(Structure.unstructured, "--structure"),
    target: float | None = typer.Option(None, "--target", help="global pruning ratio in [0, 1), e.g. 0.9"),
    per_layer: str | None = typer.Option(None, "--per-layer", help="conv1=0.8,conv2=0.92,... (see inspect)"),
    quantize_bits: int | None = typer.Option(None, "--quantize-bits", help="ADMM-NN quantization width"),
    adversarial: bool = typer.Option(False, "--adversarial", metavar="",
                                     help="PGD training in the W-step and retraining"),
    adv_eps: str = typer.Option("0.1", "--adv-eps"),
    adv_steps: int = typer.Option(10, "--adv-steps"),
    rho: float = typer.Option(1e-3, "--rho", help="initial ADMM penalty (grows by --rho-growth per round)"),
    rho_growth: float = typer.Option(1.3, "--rho-growth"),
    rounds: int = typer.Option(10, "--rounds", help="ADMM rounds"),
    epochs_per_round: int = typer.Option(1, "--epochs-per-round"),
    retrain_epochs: int = typer.Option(3, "--retrain-epochs", help="masked retraining epochs"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
) -> None:
    """Prune (and optionally quantize) a dense checkpoint with ADMM or magnitude pruning."""
    from advbench.compression import PruneConfig, parse_per_layer
    from advbench.compression.pipeline import prune_checkpoint
    from advbench.devices import check_device
    from advbench.threat import parse_eps

    dev = check_device(device)

    cfg = PruneConfig(method=method.value, structure=structure.value, rounds=rounds, epochs_per_round=epochs_per_round,
                      rho=rho, rho_growth=rho_growth, retrain_epochs=retrain_epochs, quantize_bits=quantize_bits,
                      adversarial=adversarial, adv_eps=parse_eps(adv_eps), adv_steps=adv_steps, seed=seed)
    meta = prune_checkpoint(checkpoint, dataset, cfg, out=out_path, target=target,
                            per_layer=parse_per_layer(per_layer) if per_layer else None, device=dev)
    comp = meta["compression"]
    err.print(f"saved {out_path}: {comp['compression_ratio']:.1f}x fewer weights, test accuracy "
              f"{meta['test_accuracy']:.4f} (dense {comp['parent_test_accuracy']:.4f})")


@app.command()
def inspect(
    checkpoint: Path = typer.Argument(..., help="a checkpoint (.safetensors, .pt, .pth)"),
    as_json: bool = typer.Option(False, "--json", metavar=""),
) -> None:
    """Per-layer sparsity, compression ratio, parameter and FLOP counts of a checkpoint."""
    from advbench.checkpoints import load_model
    from advbench.compression import compression_stats
    from advbench.compression.shrink import count_flops, count_params

    model = load_model(checkpoint)
    stats = compression_stats(model)
    stats["params"] = count_params(model)
    stats["flops"] = count_flops(model, model.input_shape)
    stats["compression"] = {k: v for k, v in getattr(model, "checkpoint_meta", {}).get("compression", {}).items()
                            if k in ("parent", "parent_sha256", "quantization", "targets")}
    if as_json:
        sys.stdout.write(json.dumps(stats) + "\n")
        return
    table = Table("layer", "shape", "params", "non-zero", "sparsity", title=str(checkpoint))
    for name, layer in stats["per_layer"].items():
        table.add_row(name, "x".join(map(str, layer["shape"])), str(layer["params"]), str(layer["nonzero"]),
                      f"{layer['sparsity']:.3f}")
    out.print(table)
    out.print(f"compression ratio {stats['compression_ratio']:.2f}x ({stats['nonzero']}/{stats['weights']} weights "
              f"non-zero); {stats['params']} parameters; {stats['flops']} multiply-accumulates per input")


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
    compression and CPU latency, as one table and one plot; every model's run goes into the store."""
    from advbench.experiments.compare import plot_comparison
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.engine import run as run_pipeline

    if len(checkpoints) < 2:
        raise ConfigError("compare needs the dense parent and at least one compressed child")
    attacks = split_csv(attack)
    params: dict[str, dict[str, Any]] = {}
    if steps is not None:
        for name in attacks:
            if _accepts(name, "steps"):
                params.setdefault(name, {})["steps"] = steps
    config = RunConfig.build(models=[str(c) for c in checkpoints], dataset=dataset, attacks=attacks, eps=eps,
                             norm=norm.value, n_samples=n_samples, attack_params=params, seed=seed,
                             experiment="compare")
    outcome = run_pipeline(config, store=store, wandb=wandb_options(wandb, None, wandb_project, store),
                           progress=True)
    report = dict(outcome.record.metrics)
    png = plot_comparison(report, plot or store.resolve().parent / "compare.png")
    report["plot"] = str(png)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    out.print(_renderer(outcome.record).render(outcome.record))
    err.print(f"plot: {png}; run stored in {store}")


@app.command()
def sweep(
    spec_path: Path = typer.Argument(..., help="the sweep spec (YAML)"),
    executor: Executor = typer.Option(Executor.local, "--executor"),
    scheduler: str | None = typer.Option(None, "--scheduler", help="tcp://HOST:PORT of a running Dask scheduler"),
    workers: int | None = typer.Option(None, "--workers", min=1,
                                       help="local Dask workers (default: one per core, or one per GPU)"),
    resume: bool = typer.Option(False, "--resume", hidden=True, metavar=""),
    force: bool = typer.Option(False, "--force", metavar="", help="rerun cells that are already stored"),
    retries: int = typer.Option(2, "--retries", min=0,
                                help="retries of a failed (or, on Dask, lost) cell before it is recorded failed"),
    list_only: bool = typer.Option(False, "--dry-run", metavar="", help="list the cells, their count and estimated "
                                   "cost (resolves each cell here: loads its model and lists its data)"),
    wandb_mode: WandbMode | None = typer.Option(None, "--wandb-mode"),
    as_json: bool = typer.Option(False, "--json", metavar=""),
) -> None:
    """Run every cell of a sweep spec (models × datasets × attacks × norms × seeds).

    Cells already in the store are skipped, so rerunning a killed or failed sweep resumes it: it runs
    exactly the cells that are missing or failed (--force reruns stored cells too). Warnings raised in a
    cell go into its record. Exits 1 when any cell failed (listed by `advbench results list`).
    """
    from advbench.sweep import dry_run, run_sweep
    from advbench.sweep_spec import load_sweep_spec

    if resume:
        raise ConfigError("sweep --resume was removed: a rerun always skips the cells already stored and runs the "
                          "rest; drop the flag (--force reruns stored cells)")
    spec = load_sweep_spec(spec_path)
    if list_only:
        cells = dry_run(spec)
        stored = [c for c in cells if c["status"] == "stored"]
        total = sum(c["cost"] for c in cells if c["status"] == "to run")
        table = Table("#", "cell", "eps", "budget", "status", title=f"sweep {spec.name}: {len(cells)} cells")
        for c in cells:
            table.add_row(str(c["index"]), c["label"], ",".join(f"{e:g}" for e in c["eps"]), f"{c['cost']:,}",
                          c["status"])
        if as_json:
            payload = {"cells": len(cells), "stored": len(stored), "estimated_iterations": total}
            sys.stdout.write(json.dumps(payload) + "\n")
            return
        out.print(table)
        out.print(f"{len(cells)} cells, {len(stored)} already stored; about {total:,} attack iterations "
                  "(samples × eps × steps/queries) left to run")
        return
    summary = run_sweep(spec, executor=executor.value, scheduler=scheduler, workers=workers, force=force,
                        retries=retries, wandb_mode=wandb_mode.value if wandb_mode else None)
    result = {"cells": summary.total, "skipped": summary.skipped, "finished": summary.finished,
              "failed": summary.failed, "warned": summary.warned, "store": spec.store}
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        warned = f" ({summary.warned} with warnings: `advbench results show`)" if summary.warned else ""
        out.print(f"sweep {spec.name}: {summary.total} cells, {summary.finished} run{warned}, {summary.skipped} "
                  f"already stored, {summary.failed} failed; store {spec.store}")
    if summary.failed:
        err.print(f"{summary.failed} of {summary.total} cells failed; see `advbench results list --store "
                  f"{shlex.quote(str(spec.store))}`", highlight=False, markup=False)
        raise typer.Exit(1)


@results_app.command("list")
def results_list(store: Path = typer.Option(Path(DEFAULT_STORE), "--store")) -> None:
    """List the stored runs, newest first (name: model|data|attacks|norm|eps=...|defense)."""
    from advbench.records import format_eps
    from advbench.store import ResultsStore

    _require_store(store)
    with ResultsStore(store) as db:
        rows = db.list_runs()
    table = Table("id", "hash", "name", "status", "created", "clean acc", "robust acc", "at eps")
    for row in rows:
        eps = row.get("eps")
        table.add_row(str(row["id"]), row["config_hash"][:12], str(row.get("run_name") or row.get("name")),
                      str(row.get("status")), str(row.get("created_at")), format_number(row.get("clean_accuracy")),
                      format_number(row.get("robust_accuracy")), "-" if eps is None else format_eps(eps))
    out.print(table)


@results_app.command("show")
def results_show(
    run_id: str = typer.Argument(..., help="run id or config-hash prefix"),
    store: Path = typer.Option(Path(DEFAULT_STORE), "--store"),
    as_json: bool = typer.Option(False, "--json", metavar=""),
) -> None:
    """Show one stored run."""
    from advbench.store import ResultsStore

    _require_store(store)
    with ResultsStore(store) as db:
        record = db.get_record(int(run_id) if run_id.isdigit() else run_id)
    if as_json:
        sys.stdout.write(json.dumps(record.as_dict()) + "\n")
    elif record.status != "finished":  # a failed sweep cell: no metrics, the error says why
        out.print(f"run {record.id} ({record.config_hash[:12]}) {record.name or ''}: {record.status}",
                  highlight=False, markup=False)
        out.print(record.error or "(no error was recorded)", highlight=False, markup=False)
    elif record.experiment in ("classifier", "minmax"):
        print_run_table([record.as_dict()], title=f"run {record.id} ({record.config_hash[:12]})")
    else:
        out.print(_renderer(record).render(record))


@results_app.command("export")
def results_export(
    fmt: ExportFormat = typer.Option(ExportFormat.csv, "--format"),
    output: Path | None = typer.Option(None, "--out", help="file to write (default: stdout)"),
    store: Path = typer.Option(Path(DEFAULT_STORE), "--store"),
) -> None:
    """Export every run as CSV (one row per run and eps; list values as JSON) or JSON (full records)."""
    from advbench.store import ResultsStore

    _require_store(store)
    with ResultsStore(store) as db:
        text = db.export(fmt.value, output)
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        err.print(f"wrote {output}")


class RenderFormat(str, Enum):
    md = "md"
    html = "html"


@leaderboard_app.command("build")
def leaderboard_build(
    store: Path = typer.Option(Path(DEFAULT_STORE), "--store", help="results store to read"),
    out_dir: Path = typer.Option(..., "--out", help="directory for the entry JSON files"),
) -> None:
    """Write one validated JSON entry per (model, defense, attack suite, dataset, norm, eps) of the store."""
    from advbench.leaderboards import build_leaderboard

    _require_store(store)
    paths = build_leaderboard(store, out_dir)
    for path in paths:
        sys.stdout.write(f"{path}\n")
    err.print(f"wrote {len(paths)} leaderboard entries to {out_dir}")


@leaderboard_app.command("render")
def leaderboard_render(
    entries_dir: Path = typer.Argument(..., help="directory of entry JSON files (from `advbench leaderboard build`)"),
    fmt: RenderFormat = typer.Option(RenderFormat.md, "--format", help="md: Markdown tables; html: one static page"),
    output: Path | None = typer.Option(None, "--out", help="file to write (default: stdout)"),
) -> None:
    """Render leaderboard entries as Markdown tables or one self-contained HTML page."""
    from advbench.io import atomic_write_text
    from advbench.leaderboards import load_entries, render

    text = render(load_entries(entries_dir), fmt.value)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(output, text)
        err.print(f"wrote {output}")


DETECTION_SPEC_HELP = "evd4uav:/path[?altitude=50m&snow=false], dota:/path, visdrone:/path or coco:/ann.json"


def _count_table(title: str, header: str, counts: dict[str, int], unit: str) -> Table:
    """One row per key with its count and share of the total."""
    total = sum(counts.values())
    table = Table(header, unit, "share", title=title)
    for name, count in counts.items():
        table.add_row(name, str(count), f"{count / total:.1%}" if total else "-")
    return table


@data_app.command("inspect")
def data_inspect(
    spec: str = typer.Argument(..., help=DETECTION_SPEC_HELP),
    as_json: bool = typer.Option(False, "--json", metavar="", help="print one JSON object on stdout"),
) -> None:
    """Count images and boxes per class, altitude, colour, type, snow flag and image size."""
    from advbench.datasets.detection import inspect_dataset, load_detection_dataset

    stats = inspect_dataset(load_detection_dataset(spec))
    if as_json:
        sys.stdout.write(json.dumps({"spec": spec, **stats}) + "\n")
        return
    per_image = stats["boxes_per_image"]
    overview = Table("images", "boxes", "boxes per image (min / mean / max)", "with rotated boxes", "with masks",
                     title=spec)
    overview.add_row(str(stats["images"]), str(stats["boxes"]),
                     f"{per_image['min']} / {per_image['mean']:.1f} / {per_image['max']}",
                     str(stats["with_rotated_boxes"]), str(stats["with_masks"]))
    out.print(overview)
    out.print(_count_table("classes", "class", stats["classes"], "boxes"))
    altitudes = Table("altitude", "images", "boxes", title="altitudes")
    for name, row in stats["altitudes"].items():
        altitudes.add_row(name, str(row["images"]), str(row["boxes"]))
    out.print(altitudes)
    out.print(_count_table("colours", "colour", stats["colours"], "boxes"))
    out.print(_count_table("types", "type", stats["types"], "boxes"))
    out.print(_count_table("snow", "snow", stats["snow"], "images"))
    out.print(_count_table("image sizes", "width x height", stats["image_sizes"], "images"))


@data_app.command("export")
def data_export(
    spec: str = typer.Argument(..., help=DETECTION_SPEC_HELP),
    coco: Path = typer.Option(..., "--coco", help="the COCO JSON file to write (written atomically)"),
) -> None:
    """Write a detection data set as one COCO JSON file that `coco:FILE` reads back."""
    from advbench.datasets.detection import export_coco, load_detection_dataset
    from advbench.errors import DatasetError

    samples = load_detection_dataset(spec)
    if not samples:
        raise DatasetError(f"{spec} has no images (after its filters); nothing to export")
    path = export_coco(samples, coco)
    boxes = sum(len(s) for s in samples)
    err.print(f"wrote {path}: {len(samples)} images, {boxes} boxes, {len(samples[0].class_names)} categories "
              f"(read it back with coco:{path})", highlight=False)


@data_app.command("generate-aerial")
def data_generate_aerial(
    out_dir: Path = typer.Argument(..., help="a new or empty folder"),
    n_images: int = typer.Option(30, "--n-images"),
    width: int = typer.Option(256, "--width"),
    height: int = typer.Option(192, "--height"),
    seed: int = typer.Option(0, "--seed", help="the same seed writes byte-identical files"),
    snow_fraction: float = typer.Option(0.2, "--snow-fraction", help="share of snowy scenes"),
) -> None:
    """Write synthetic top-view road scenes in the EVD4UAV layout (test and demo data, not real imagery)."""
    from advbench.datasets.detection import generate_aerial_dataset

    root = generate_aerial_dataset(out_dir, n_images=n_images, size=(width, height), seed=seed,
                                   snow_fraction=snow_fraction)
    err.print(f"wrote {n_images} synthetic aerial scenes ({width}x{height}, seed {seed}) to {root}; "
              f"load them as evd4uav:{root}?masks=true", highlight=False)


def _require_store(store: Path) -> None:
    from advbench.errors import MissingPathError

    if not store.exists():
        raise MissingPathError(f"results store {store} does not exist; run `advbench run ... --store "
                               f"{shlex.quote(str(store))}` first")


@app.command()
def demo(
    dataset: str = typer.Option("digits", "--dataset", help="digits (fast) or mnist5k"),
    out_dir: Path = typer.Option(Path("demo-out"), "--out-dir"),
    eps: str = typer.Option("0.05,0.1,0.2", "--eps"),
    n_samples: int = typer.Option(300, "--n-samples"),
    wandb: bool = typer.Option(False, "--wandb", metavar=""),
) -> None:
    """Train a small CNN, then evaluate it under FGSM, PGD, APGD-CE and Square at several eps."""
    from advbench.runner import RunSpec
    from advbench.runner import run as run_one
    from advbench.training import TrainConfig, train_and_save

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / f"small_cnn-{dataset}.safetensors"
    if not ckpt.exists():
        epochs = 15 if dataset == "digits" else 4
        meta = train_and_save(TrainConfig(arch="small_cnn", dataset=dataset, epochs=epochs), ckpt)
        err.print(f"trained {ckpt} (test accuracy {meta['test_accuracy']:.4f})")
    params = {"pgd": {"steps": 20}, "apgd-ce": {"steps": 20}, "square": {"n_queries": 500}}
    spec = RunSpec(model=str(ckpt), dataset=dataset, attacks=["fgsm", "pgd", "apgd-ce", "square"], eps=eps,
                   n_samples=n_samples, attack_params=params)
    wandb_opts = wandb_options(wandb, None, "advbench-demo", out_dir / "results.db")
    outcome = run_one(spec, store=out_dir / "results.db", wandb=wandb_opts)
    print_run_table([outcome.record], title=f"small_cnn on {dataset}")
    err.print(f"store: {out_dir / 'results.db'}  (try: advbench results list --store "
              f"{shlex.quote(str(out_dir / 'results.db'))})", highlight=False, markup=False)


# Command groups kept in their own modules register themselves on ``app``.
from advbench import cli_clouds, cli_defense, cli_detection, cli_multitask, cli_sod  # noqa: E402,F401

#: What an interrupted command says: finished batches and records are kept, nothing half-written is.
INTERRUPTED = ("interrupted; every finished batch is in the store and the same command resumes after it "
               "(nothing half-written was kept)")


def main() -> None:
    """Entry point: run the app, turning advbench errors into one-line messages (exit code 2)."""
    logging.basicConfig(level=os.environ.get("ADVBENCH_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("ignore", SanityWarning)  # recorded in the run and printed once by the command itself
    try:
        code = app(standalone_mode=False)  # typer returns the exit code (130 after Ctrl-C) in this mode
    except AdvbenchError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print(INTERRUPTED)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print(INTERRUPTED)
        sys.exit(130)
    except Exception as exc:  # usage errors: typer raises its own copy of click's exceptions (public base class
        import click  # typer.TyperException), older typers click's own; only public names are used

        if isinstance(exc, (click.ClickException, typer.TyperException)) and hasattr(exc, "show"):
            exc.show()
            sys.exit(int(getattr(exc, "exit_code", 2)))
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise
    if code == 130:
        err.print(INTERRUPTED)
    if isinstance(code, int) and code:
        sys.exit(code)
