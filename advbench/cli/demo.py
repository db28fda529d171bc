"""``advbench demo``: train a small model and evaluate it, end to end."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from advbench.cli.app import app
from advbench.cli.options import err, print_run_table, wandb_options


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
