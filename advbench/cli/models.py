"""``advbench train``, ``prune`` and ``inspect``: make and look at classifier checkpoints."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from advbench.cli.app import app
from advbench.cli.options import Norm, err, out


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


def structure_options(block: str | None, nm: str | None, patterns: int | None,
                      levels: str | None = None, block_prune: str | None = None) -> dict[str, Any]:
    """``--block 4x8``, ``--block-prune rows``, ``--nm 2:4``, ``--patterns 8`` and ``--levels 0.5,0.75,0.9`` as the
    structure's parameters."""
    from advbench.errors import ConfigError

    options: dict[str, Any] = {}
    if levels is not None:
        try:
            options["levels"] = tuple(float(v) for v in levels.split(","))
        except ValueError:
            raise ConfigError(f"--levels takes comma-separated ratios such as 0.5,0.75,0.9, got '{levels}'") from None
    for flag, text, sep, keys in (("--block", block, "x", ("block_rows", "block_cols")), ("--nm", nm, ":", ("n", "m"))):
        if text is None:
            continue
        parts = text.lower().split(sep)
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"{flag} takes two whole numbers as A{sep}B (e.g. {'4x8' if sep == 'x' else '2:4'}), "
                              f"got '{text}'")
        options.update(zip(keys, (int(p) for p in parts), strict=True))
    if patterns is not None:
        options["library_size"] = patterns
    if block_prune is not None:
        options["prune"] = block_prune
    return options


class PruneMethod(str, Enum):
    admm = "admm"
    progressive = "progressive"
    reweighted = "reweighted"
    magnitude = "magnitude"


@app.command()
def prune(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="the dense parent (.safetensors)"),
    dataset: str = typer.Option(..., "--dataset"),
    out_path: Path = typer.Option(..., "--out", help="the pruned child (.safetensors)"),
    method: PruneMethod = typer.Option(PruneMethod.admm, "--method"),
    structure: str = typer.Option("unstructured", "--structure",
                                  help="unstructured, filter, channel, block, pattern or nm (advbench.compression."
                                       "structures)"),
    block: str | None = typer.Option(None, "--block", help="block structure: tile ROWSxCOLS of the GEMM matrix, "
                                                          "e.g. 8x8"),
    block_prune: str | None = typer.Option(None, "--block-prune", help="block structure: prune 'columns' "
                                                                      "(default) or 'rows' within each tile"),
    nm: str | None = typer.Option(None, "--nm", help="nm structure: N:M, e.g. 2:4"),
    patterns: int | None = typer.Option(None, "--patterns", help="pattern structure: library size (PatDNN uses 8)"),
    levels: str | None = typer.Option(None, "--levels", help="nested structure: ascending ratios, densest first, "
                                                             "e.g. 0.5,0.75,0.9 (evaluate one with PATH?level=K)"),
    target: float | None = typer.Option(None, "--target", help="global pruning ratio in [0, 1), e.g. 0.9"),
    per_layer: str | None = typer.Option(None, "--per-layer", help="conv1=0.8,conv2=0.92,... (see inspect)"),
    quantize_bits: int | None = typer.Option(None, "--quantize-bits", help="ADMM-NN quantization width "
                                                                           "(1: binary)"),
    stages: int = typer.Option(3, "--stages", help="progressive: ADMM stages toward the target"),
    quantize_admm: bool = typer.Option(False, "--quantize-admm", metavar="",
                                       help="ADMM-NN rounds toward the quantization levels before snapping to them "
                                            "(progressive does this from 8 bits down)"),
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

    cfg = PruneConfig(method=method.value, structure=structure,
                      structure_options=structure_options(block, nm, patterns, levels, block_prune), rounds=rounds,
                      epochs_per_round=epochs_per_round,
                      rho=rho, rho_growth=rho_growth, retrain_epochs=retrain_epochs, quantize_bits=quantize_bits,
                      adversarial=adversarial, adv_eps=parse_eps(adv_eps), adv_steps=adv_steps, seed=seed,
                      stages=stages, quantize_admm=quantize_admm)
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
    """Per-layer sparsity, compression ratio, parameter and FLOP counts of a checkpoint, and its sparsity structure
    verified from the tensors (exit code 1 when the weights break the structure the metadata claims)."""
    from advbench.compression import compression_stats
    from advbench.compression.checks import verify_checkpoint_structure
    from advbench.compression.shrink import count_flops, count_params
    from advbench.models.loading import load_model

    model = load_model(checkpoint)
    stats = compression_stats(model)
    stats["params"] = count_params(model)
    stats["flops"] = count_flops(model, model.input_shape)
    stats["compression"] = {k: v for k, v in getattr(model, "checkpoint_meta", {}).get("compression", {}).items()
                            if k in ("parent", "parent_sha256", "quantization", "targets", "family")}
    stats["structure"] = verify_checkpoint_structure(model)
    if as_json:
        sys.stdout.write(json.dumps(stats) + "\n")
        if stats["structure"]["violations"]:
            raise typer.Exit(1)
        return
    table = Table("layer", "shape", "params", "non-zero", "sparsity", title=str(checkpoint))
    for name, layer in stats["per_layer"].items():
        table.add_row(name, "x".join(map(str, layer["shape"])), str(layer["params"]), str(layer["nonzero"]),
                      f"{layer['sparsity']:.3f}")
    out.print(table)
    out.print(f"compression ratio {stats['compression_ratio']:.2f}x ({stats['nonzero']}/{stats['weights']} weights "
              f"non-zero); {stats['params']} parameters; {stats['flops']} multiply-accumulates per input")
    found = stats["structure"]
    if found["violations"]:
        for layer, problems in found["violations"].items():
            err.print(f"[red]{layer} breaks the {found['structure']} structure: {'; '.join(problems[:3])}[/red]")
        raise typer.Exit(1)
    if found["structure"]:
        out.print(f"structure {found['structure']} ({found['source']}) verified on {len(found['layers'])} layers: "
                  f"{', '.join(found['layers'])}")
