"""Compare a dense checkpoint with its compressed children: is the child still as robust, and at what cost?

For every model: clean and robust accuracy per eps and ASR (the attack cascade), sparsity and compression
ratio, measured CPU latency; for every child, the transfer ASR of the dense parent's adversarial examples
to the child and of the child's back to the parent, and the worst per-class robust-accuracy drop against
the parent (disparate impact of compression).  Every model's run goes into the results store.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from advbench.compression.admm import compression_stats
from advbench.evaluate import EvaluationResult
from advbench.runner import RunSpec, build_record, execute, prepare


def cpu_latency_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int = 7) -> float:
    """Median wall time of one eval-mode forward pass on ``x`` (after a warm-up), in milliseconds."""
    model.eval()
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _transfer_asr(target: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, source: EvaluationResult,
                  eps: float) -> float | None:
    """Fraction of the source's successful adversarial examples that also fool ``target``, among samples
    ``target`` classifies correctly when clean."""
    rows = [s for s in source.samples if s["eps"] == eps]
    fooled_source = torch.tensor([s["clean_correct"] and not s["robust"] for s in rows])
    with torch.no_grad():
        clean_ok = target(x).argmax(1) == y
        transfer = target(source.x_adv[eps]).argmax(1) != y
    usable = fooled_source & clean_ok.cpu()
    return float(transfer.cpu()[usable].float().mean()) if bool(usable.any()) else None


def compare(
    checkpoints: list[str],
    *,
    dataset: str,
    attacks: list[str],
    eps: list[float],
    norm: str = "linf",
    n_samples: int = 500,
    attack_params: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    store: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the parent (``checkpoints[0]``) and every child; returns the comparison rows."""
    results, models, rows = [], [], []
    x = y = None
    for path in checkpoints:
        spec = RunSpec(model=path, dataset=dataset, attacks=attacks, eps=eps, norm=norm, n_samples=n_samples,
                       seed=seed, attack_params=attack_params or {})
        model, x_m, y_m, config = prepare(spec)
        if x is None:
            x, y = x_m, y_m
        from advbench.evaluate import evaluate

        def compute(model=model, config=config, x_m=x_m, y_m=y_m, spec=spec):
            result = evaluate(model, x_m, y_m, attacks=spec.attacks, eps=spec.eps, norm=spec.norm,
                              attack_kwargs=spec.attack_params, seed=spec.seed, progress=progress)
            return build_record(config, result, spec.device), result

        outcome = execute(config, compute, store=store, force=True)  # the examples are needed for transfer
        results.append(outcome.result)
        models.append(model)
        stats = compression_stats(model)
        rows.append({"model": Path(path).stem, "path": path, "config_hash": outcome.record["config_hash"],
                     "sparsity": stats["sparsity"], "compression_ratio": stats["compression_ratio"],
                     "clean_accuracy": outcome.result.clean_accuracy,
                     "latency_ms": cpu_latency_ms(model, x_m[:256]), "curve": []})
    parent_result, parent = results[0], models[0]
    for row, model, result in zip(rows, models, results, strict=True):
        for point, parent_point in zip(result.per_eps, parent_result.per_eps, strict=True):
            entry = {"eps": point.eps, "robust_accuracy": point.robust_accuracy,
                     "attack_success_rate": point.attack_success_rate}
            if model is not parent:
                entry["transfer_asr_from_parent"] = _transfer_asr(model, x, y, parent_result, point.eps)
                entry["transfer_asr_to_parent"] = _transfer_asr(parent, x, y, result, point.eps)
                drops = [parent_point.per_class_robust_accuracy[c] - point.per_class_robust_accuracy.get(c, 0.0)
                         for c in parent_point.per_class_robust_accuracy]
                entry["worst_class_drop"] = max(drops) if drops else None
            row["curve"].append(entry)
    return {"dataset": dataset, "norm": norm, "attacks": attacks, "eps": sorted(eps), "models": rows}


def plot_comparison(report: dict[str, Any], path: str | Path) -> Path:
    """Robust accuracy vs eps for every model, one line each, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in report["models"]:
        eps = [0.0] + [p["eps"] for p in row["curve"]]
        acc = [row["clean_accuracy"]] + [p["robust_accuracy"] for p in row["curve"]]
        ax.plot(eps, acc, marker="o", label=f"{row['model']} ({row['compression_ratio']:.1f}x)")
    ax.set_xlabel(f"eps ({report['norm']})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"dense vs compressed on {report['dataset']}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
