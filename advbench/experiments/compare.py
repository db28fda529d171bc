"""The dense-vs-compressed experiment: is a pruned (or quantized) child as robust as its dense parent, at what cost?

``config.models`` holds the dense parent first, then its compressed children.  Every model is evaluated on the
parent's samples, batch by batch, with the classifier cascade (AutoAttack-style, Croce & Hein, ICML 2020: each
attack runs only on the still-robust samples, eps ascending; :func:`advbench.evaluate.cascade_batch`).  Each
model's cascade starts from the same state of the batch's generator, so a model's numbers are exactly those of
a classifier-experiment run of that model alone with the same seed and batch size.

Per child and eps the batch also counts the transfer of adversarial examples both ways: among the samples whose
source model was fooled (correct when clean, broken at that eps) and that the target model classifies correctly
when clean, how many of the source's examples also fool the target (parent -> child and child -> parent).  The
merged report holds, per model, clean accuracy, the curve of robust accuracy and ASR, the transfer ASRs and the
worst per-class robust-accuracy drop against the parent (the disparate impact of compression, Hooker et al.,
"What Do Compressed Deep Neural Networks Forget?", arXiv 1911.05248), plus sparsity, compression ratio and the
forward latency.  Latency is measured, not derived from the config, so it is not part of the hashed config: batch 0
measures it (with the compression statistics) and the merge reads it from batch 0's result.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advbench.errors import ConfigError
from advbench.pipeline.config import ResolvedConfig
from advbench.pipeline.experiment import EXPERIMENTS, BatchResult, Experiment, Plan

#: Samples of batch 0 the latency is measured on (at most).
LATENCY_SAMPLES = 256


def forward_latency_ms(model: nn.Module, x: torch.Tensor, repeats: int = 7) -> float:
    """Median wall time of one eval-mode forward pass on ``x`` (after a warm-up), in milliseconds; on a GPU the
    device is synchronised around each pass."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    training = model.training
    model.eval()
    times = []
    try:
        with torch.no_grad():
            model(x)
            sync()
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                sync()
                times.append(time.perf_counter() - start)
    finally:
        model.train(training)
    return 1e3 * statistics.median(times)


def display_names(identities: Sequence[dict[str, Any]]) -> list[str]:
    """The report's model names: each identity's name (a checkpoint's file stem), made unique with ``#i``."""
    names: list[str] = []
    for i, identity in enumerate(identities):
        name = str(identity.get("name") or f"model{i}")
        names.append(name if name not in names else f"{name}#{i}")
    return names


def transfer_counts(target: nn.Module, target_clean_ok: torch.Tensor, source_rows: Sequence[dict[str, Any]],
                    source_x_adv: torch.Tensor, y: torch.Tensor) -> list[int]:
    """``[usable, transferred]``: samples the source model was fooled on (clean-correct, not robust) that the
    target classifies correctly when clean, and how many of those the source's example also fools."""
    from advbench.evaluate import predict_labels

    fooled = torch.tensor([bool(r["clean_correct"]) and not bool(r["robust"]) for r in source_rows],
                          dtype=torch.bool, device=y.device)
    usable = fooled & target_clean_ok
    if not bool(usable.any()):
        return [0, 0]
    transferred = predict_labels(target, source_x_adv, max(len(y), 1)) != y
    return [int(usable.sum()), int((transferred & usable).sum())]


def _ratio(counts: Sequence[Sequence[int]]) -> float | None:
    usable = sum(int(c[0]) for c in counts)
    return sum(int(c[1]) for c in counts) / usable if usable else None


@EXPERIMENTS.register("compare")
class CompareExperiment(Experiment):
    """Dense parent vs compressed children (see the module docstring)."""

    name = "compare"

    def resolve(self) -> Plan:
        import advbench.attacks  # noqa: F401 - registers every attack before the names are looked up
        from advbench.attack import ATTACKS
        from advbench.evaluate import build_plan
        from advbench.experiments.classifier import attack_hyperparameters, require_gradients
        from advbench.pipeline.victim import open_victim

        cfg = self.run_config
        if len(cfg.models) < 2:
            raise ConfigError("compare needs the dense parent and at least one compressed child: pass --model "
                              "PARENT,CHILD[,CHILD...] (the parent first)")
        if cfg.defense:
            raise ConfigError("--defense is not supported by the dense-vs-compressed comparison; evaluate a "
                              "defended model with the classifier experiment")
        if cfg.options:
            raise ConfigError(f"the compare experiment takes no options, got {sorted(cfg.options)}")
        recipes = [a for a in cfg.attacks if getattr(ATTACKS.get(a), "multi_domain", False)]
        if recipes:
            raise ConfigError(f"compare runs the attack cascade; the min-max recipes {recipes} cannot be part of it")
        attacks = attack_hyperparameters(cfg)
        self.eps_sorted, self.plan = build_plan(cfg.attacks, cfg.eps, cfg.norm, cfg.attack_params)
        victims = [open_victim(m, cfg.dataset, seed=cfg.seed, device=cfg.device, options=cfg.model_flags.options(),
                               n_samples=cfg.n_samples, selection=cfg.selection, samples=cfg.samples,
                               class_map=cfg.class_map) for m in cfg.models]
        parent = victims[0]
        warnings = [w for v in victims for w in v.warnings]
        for victim, spec in zip(victims, cfg.models, strict=True):
            require_gradients(victim.differentiable, cfg.attacks, spec)
            if victim.input_shape != parent.input_shape:
                raise ConfigError(f"{spec} takes inputs {victim.input_shape} but the parent {cfg.models[0]} takes "
                                  f"{parent.input_shape}; a compressed child must take the parent's inputs")
            if victim.split_seed != parent.split_seed:
                warnings.append(f"{spec} was trained with split seed {victim.split_seed}, the parent with "
                                f"{parent.split_seed}; every model is evaluated on the parent's split")
        self.victim, self.models = parent, [v.model for v in victims]
        identities = [v.identity for v in victims]
        config = ResolvedConfig(experiment=self.name, model={"name": " vs ".join(display_names(identities))},
                                models=identities, arch=parent.arch, dataset=cfg.dataset, data=parent.data,
                                split_seed=parent.split_seed, n_samples=parent.n_samples, norm=cfg.norm, eps=cfg.eps,
                                attacks=attacks, seed=cfg.seed, batch_size=cfg.batch_size,
                                device=torch.device(cfg.device).type)
        return Plan(config, parent.n_samples, cfg.batch_size, warnings)

    def dataset(self):
        return self.victim.dataset()

    def collate(self, items: Any) -> Any:
        return items

    def compute(self, batch: int, indices: np.ndarray, inputs: Any, generator: torch.Generator) -> BatchResult:
        """Every model's cascade (each from the generator's state on entry), the transfer counts of every child
        both ways, and on batch 0 the models' latency and compression statistics."""
        from advbench.compression.admm import compression_stats
        from advbench.evaluate import cascade_batch, eps_key

        x, y = (t.to(self.run_config.device) for t in inputs)
        ids = [self.victim.stream.sample_ids[i] for i in indices]
        state = generator.get_state()
        outs = []
        for model in self.models:
            own = torch.Generator(device=generator.device)
            own.set_state(state)
            outs.append(cascade_batch(model, x, y, self.plan, generator=own, offset=int(indices[0]),
                                      probe=batch == 0, keep_examples=True, sample_ids=ids))
        rows = [[[r for r in out.result["samples"] if r["eps"] == e] for e in self.eps_sorted] for out in outs]
        clean_ok = [torch.tensor([bool(r["clean_correct"]) for r in per_eps[0]], dtype=torch.bool, device=y.device)
                    for per_eps in rows]
        transfer = []
        for c in range(1, len(self.models)):
            transfer.append({eps_key(e): {
                "from_parent": transfer_counts(self.models[c], clean_ok[c], rows[0][j], outs[0].x_adv[e], y),
                "to_parent": transfer_counts(self.models[0], clean_ok[0], rows[c][j], outs[c].x_adv[e], y)}
                for j, e in enumerate(self.eps_sorted)})
        result: dict[str, Any] = {"n": int(x.shape[0]), "models": [out.result for out in outs], "transfer": transfer}
        if batch == 0:
            result["model_stats"] = []
            for model in self.models:
                stats = compression_stats(model)
                result["model_stats"].append({"sparsity": stats["sparsity"],
                                              "compression_ratio": stats["compression_ratio"],
                                              "latency_ms": forward_latency_ms(model, x[:LATENCY_SAMPLES])})
        return result

    def merge(self, config: dict[str, Any], warnings: Sequence[str], results: Sequence[BatchResult]
              ) -> dict[str, Any]:
        from advbench.evaluate import eps_key, merge_cascade

        eps_sorted = sorted(set(config["eps"]))
        names = display_names(config["models"])
        stats = results[0]["model_stats"]
        notes = [{"name": "RunWarning", "message": m} for m in warnings]
        rows, samples, per_model_cost, parent_eps = [], [], {}, None
        for i, name in enumerate(names):
            merged = merge_cascade([r["models"][i] for r in results], eps_sorted, config["norm"])
            notes.extend({"name": w["name"], "message": f"{name}: {w['message']}"} for w in merged["warnings"])
            identity = config["models"][i]
            row: dict[str, Any] = {"model": name, "path": identity.get("path") or identity.get("spec"),
                                   "family": "dense" if i == 0 else identity.get("family", "compressed"),
                                   "sparsity": stats[i]["sparsity"], "compression_ratio": stats[i]["compression_ratio"],
                                   "clean_accuracy": merged["clean_accuracy"], "latency_ms": stats[i]["latency_ms"],
                                   "curve": []}
            for j, point in enumerate(merged["per_eps"]):
                entry: dict[str, Any] = {"eps": point.eps, "robust_accuracy": point.robust_accuracy,
                                         "attack_success_rate": point.attack_success_rate}
                if i:
                    key = eps_key(point.eps)
                    entry["transfer_asr_from_parent"] = _ratio([r["transfer"][i - 1][key]["from_parent"]
                                                                for r in results])
                    entry["transfer_asr_to_parent"] = _ratio([r["transfer"][i - 1][key]["to_parent"] for r in results])
                    ref = parent_eps[j].per_class_robust_accuracy
                    drops = [ref[c] - point.per_class_robust_accuracy.get(c, 0.0) for c in ref]
                    entry["worst_class_drop"] = max(drops) if drops else None
                row["curve"].append(entry)
            if i == 0:
                parent_eps = merged["per_eps"]
            rows.append(row)
            samples.extend({**s, "model": name} for s in merged["samples"])
            per_model_cost[name] = {"gradients": merged["gradients"], "queries": merged["queries"],
                                    "wall_time_s": merged["wall_time_s"]}
        metrics = {"dataset": config["dataset"], "norm": config["norm"],
                   "attacks": [a["name"] for a in config["attacks"]], "eps": eps_sorted,
                   "n": sum(int(r["n"]) for r in results), "models": rows, "warnings": notes}
        cost = {"gradients": sum(c["gradients"] for c in per_model_cost.values()),
                "queries": sum(c["queries"] for c in per_model_cost.values()),
                "wall_time_s": round(sum(c["wall_time_s"] for c in per_model_cost.values()), 4),
                "per_model": per_model_cost}
        return {"metrics": metrics, "cost": cost, "samples": samples}

    def render(self, record: Any) -> Any:
        return comparison_table(record)

    def after_store(self, record: Any, wandb: dict[str, Any] | None) -> None:
        if wandb is None:
            return
        import tempfile

        import wandb as wandb_module

        from advbench.tracking import WandbSink

        data = record.as_dict(samples=False)
        report = data["metrics"]
        with WandbSink(name=data["name"], config=data["config"], tags=["compare", report["norm"]], **wandb) as sink, \
                tempfile.TemporaryDirectory() as tmp:
            png = plot_comparison(report, Path(tmp) / "compare.png")
            pareto = plot_pareto(report, Path(tmp) / "pareto.png")
            sink.log_metrics({"robust_accuracy_vs_eps": wandb_module.Image(str(png)),
                              "robust_accuracy_vs_compression": wandb_module.Image(str(pareto))})
            sink.log_metrics({"comparison": wandb_module.Table(
                columns=["model", "eps", "robust_accuracy", "compression_ratio"],
                data=[[r["model"], p["eps"], p["robust_accuracy"], r["compression_ratio"]]
                      for r in report["models"] for p in r["curve"]])})


def comparison_table(record: Any) -> Any:
    """One row per (model, eps): compression, clean and robust accuracy, ASR, transfer both ways, worst class
    drop and latency (the table ``advbench compare`` prints)."""
    from rich.table import Table

    from advbench.pipeline.tables import fmt

    data = record.as_dict(samples=False) if hasattr(record, "as_dict") else record
    report = data["metrics"]
    table = Table(title=f"dense vs compressed on {report['dataset']} ({', '.join(report['attacks'])}, "
                        f"{report['norm']})")
    for col in ("model", "family", "compression", "sparsity", "clean acc", "eps", "robust acc", "ASR",
                "transfer from dense",
                "transfer to dense", "worst class drop", "latency ms"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in report["models"]:
        for i, point in enumerate(row["curve"]):
            first = i == 0
            table.add_row(row["model"] if first else "", row.get("family", "") if first else "",
                          f"{row['compression_ratio']:.1f}x" if first else "",
                          fmt(row["sparsity"]) if first else "", fmt(row["clean_accuracy"]) if first else "",
                          fmt(point["eps"]), fmt(point["robust_accuracy"]), fmt(point["attack_success_rate"]),
                          fmt(point.get("transfer_asr_from_parent")), fmt(point.get("transfer_asr_to_parent")),
                          fmt(point.get("worst_class_drop")), fmt(row["latency_ms"]) if first else "")
    return table


def plot_comparison(report: dict[str, Any], path: str | Path) -> Path:
    """A PNG at ``path`` of robust accuracy against eps, one line per model (eps 0 is the clean accuracy), labelled
    with its compression ratio; ``report`` is a compare record's metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for row in report["models"]:
            xs = [0.0, *(point["eps"] for point in row["curve"])]
            ys = [row["clean_accuracy"], *(point["robust_accuracy"] for point in row["curve"])]
            ax.plot(xs, ys, marker="o", label=f"{row['model']} ({row['compression_ratio']:.1f}x)")
        ax.set_xlabel(f"eps ({report['norm']})")
        return _save(fig, ax, "robust accuracy", f"dense vs compressed on {report['dataset']}", path)
    finally:
        plt.close(fig)


def _save(fig: Any, ax: Any, ylabel: str, title: str, path: str | Path) -> Path:
    """Finish an accuracy plot (y in [0, 1], grid, legend, title) and write it as a PNG at ``path``."""
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats in both compression ratio and robust accuracy, by ratio.

    >>> pareto_front([(1.0, 0.8), (4.0, 0.7), (4.0, 0.5), (10.0, 0.72), (20.0, 0.1)])
    [(1.0, 0.8), (10.0, 0.72), (20.0, 0.1)]
    """
    front = []
    for ratio, acc in sorted(points, key=lambda p: (-p[0], -p[1])):  # most compressed first
        if not front or acc > front[-1][1]:
            front.append((ratio, acc))
    return sorted(front)


def plot_pareto(report: dict[str, Any], path: str | Path) -> Path:
    """A PNG at ``path`` of robust accuracy at the largest eps against the compression ratio, one series per
    family (the dense parent at 1x), with the Pareto front over every model drawn as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def accuracy(row: dict[str, Any]) -> float:
        return row["curve"][-1]["robust_accuracy"] if row["curve"] else row["clean_accuracy"]

    families: dict[str, list[tuple[float, float]]] = {}
    for row in report["models"]:
        families.setdefault(row.get("family") or "compressed", []).append((row["compression_ratio"], accuracy(row)))
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for family, points in families.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="*" if family == "dense" else "o",
                    label=family)
        front = pareto_front([p for points in families.values() for p in points])
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", alpha=0.5, label="Pareto front")
        ax.set_xscale("log")
        eps = report["eps"][-1] if report.get("eps") else 0.0
        ax.set_xlabel("compression ratio (total / non-zero weights)")
        return _save(fig, ax, f"robust accuracy at eps {eps:g} ({report['norm']})",
                     f"robustness by compression family on {report['dataset']}", path)
    finally:
        plt.close(fig)
