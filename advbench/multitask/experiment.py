"""The multi-task experiment: one multi-task attack on a dense-prediction model, per-task metrics and stealth.

The measurement of :func:`advbench.multitask.robustness.multitask_robustness`, batch by batch: the attack (for
example the stealthy attack of Guo, Zhang, Li et al., arXiv 2411.17936) runs on each
batch, and every task's headline metric (mIoU, depth absolute error, normal angular error) is measured on the
clean and the attacked images, with its change, its degradation and the stealth success rate (the share of images
whose target task worsens by at least ``margin`` while every other task worsens by at most ``tolerance``).

How the set metrics aggregate, and what a batch keeps for :meth:`MultiTaskExperiment.merge`:

* the clean / attacked metric of a task over the set is *pooled*, not a mean of per-image values (mIoU from the
  per-class intersections and unions summed over every image, depth and normal errors over every valid pixel),
  so a batch keeps those counts: per class intersection and union, the sum of absolute depth errors and of
  normal angles with their valid-pixel counts;
* the change and the degradation of a task come from the two set metrics;
* the stealth success rate is a share of images, so a batch keeps its number of successes;
* the learned weights / multipliers and the relative loss changes are means over images, so a batch keeps their
  sums.

Settings in ``RunConfig.options``: ``target_task`` (a task of the model, or None), ``margin`` (default 0.1) and
``tolerance`` (default 0.05), both relative changes >= 0.  A run has one attack, one eps and no defense.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from advbench.errors import ConfigError
from advbench.pipeline.config import ResolvedConfig
from advbench.pipeline.dense_tasks import (
    TensorPairs,
    check_common,
    checkpoint_identity,
    run_warnings,
    tensor_fingerprint,
)
from advbench.pipeline.experiment import EXPERIMENTS, BatchResult, Experiment, Plan

#: The options a multi-task run reads, with their defaults.
OPTIONS: dict[str, Any] = {"target_task": None, "margin": 0.1, "tolerance": 0.05}
#: Images per attack call and per measuring forward pass (``multitask_robustness``'s batch size).
ATTACK_BATCH = 32


def multitask_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``target_task``, ``margin`` and ``tolerance`` from ``RunConfig.options``, checked (unknown keys refused)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"multi-task options are {', '.join(OPTIONS)}; got unknown option(s) {', '.join(unknown)}")
    out = {**OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    if out["target_task"] is not None and not isinstance(out["target_task"], str):
        raise ConfigError(f"option target_task must be a task name such as 'seg', got {out['target_task']!r}")
    for name in ("margin", "tolerance"):
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"option {name} (--{name}) must be a number >= 0 (a relative change, e.g. 0.1 for "
                              f"10%), got {value!r}")
        out[name] = float(value)
    return out


def measure(model: nn.Module, x: torch.Tensor, targets: Mapping[str, torch.Tensor], tasks: Sequence[str],
            batch_size: int = ATTACK_BATCH) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """Per-image headline metrics ``{task: (B,) float64}`` of ``model`` on ``x`` and the counts the set metrics
    pool (see the module docstring), summed over ``x`` on the CPU."""
    from advbench.multitask.metrics import depth_sums, normal_angles, per_sample_metrics, seg_iou_counts

    num_classes = getattr(model, "num_classes", None)
    parts: list[dict[str, torch.Tensor]] = []
    counts: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            outputs = model(x[start:start + batch_size])
            chunk = {t: targets[t][start:start + batch_size] for t in tasks}
            parts.append({t: v.cpu() for t, v in per_sample_metrics(outputs, chunk, num_classes=num_classes).items()})
            for task in tasks:
                if task == "seg":
                    inter, union = (v.sum(0).cpu() for v in seg_iou_counts(outputs[task], chunk[task], num_classes))
                    into = counts.setdefault(task, {"inter": torch.zeros_like(inter), "union": torch.zeros_like(union)})
                    into["inter"] += inter
                    into["union"] += union
                elif task == "depth":
                    abs_sum, _, valid = depth_sums(outputs[task], chunk[task])
                    into = counts.setdefault(task, {"sum": 0.0, "count": 0.0})
                    into["sum"] += float(abs_sum.sum())
                    into["count"] += float(valid.sum())
                elif task == "normal":
                    angles, valid = normal_angles(outputs[task], chunk[task])
                    into = counts.setdefault(task, {"sum": 0.0, "count": 0.0})
                    into["sum"] += float(angles[valid].sum())
                    into["count"] += float(valid.sum())
                else:
                    raise ConfigError(f"the multi-task experiment has no set metric for task '{task}'")
    per_image = {t: torch.cat([p[t] for p in parts]) for t in tasks}
    plain = {t: {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in c.items()} for t, c in counts.items()}
    return per_image, plain


def headline(counts: Sequence[Mapping[str, Mapping[str, Any]]], tasks: Sequence[str]) -> dict[str, float]:
    """Every task's set metric from the counts of several batches: mIoU of the summed per-class intersections
    and unions, pooled mean depth error and normal angle (NaN where nothing is valid)."""
    from advbench.multitask.metrics import miou_from_counts

    out: dict[str, float] = {}
    for task in tasks:
        if task == "seg":
            inter = sum(torch.tensor(c[task]["inter"], dtype=torch.float64) for c in counts)
            union = sum(torch.tensor(c[task]["union"], dtype=torch.float64) for c in counts)
            out[task] = float(miou_from_counts(inter, union))
        else:
            total, count = sum(c[task]["sum"] for c in counts), sum(c[task]["count"] for c in counts)
            out[task] = total / count if count > 0 else math.nan
    return out


@EXPERIMENTS.register("multitask")
class MultiTaskExperiment(Experiment):
    """One multi-task attack on a multi-task model, per-task metrics and stealth success (see the module doc)."""

    name = "multitask"

    def resolve(self) -> Plan:
        from advbench import create_attack
        from advbench.attack import check_attack_task
        from advbench.datasets.multitask import load_multitask_dataset
        from advbench.training.multitask import load_multitask_model

        cfg = self.run_config
        check_common(cfg, "multi-task")
        if len(cfg.attacks) != 1:
            raise ConfigError(f"a multi-task run takes one --attack, got {', '.join(cfg.attacks)}; run them one "
                              "by one")
        if cfg.defense:
            raise ConfigError("--defense applies to classifiers and SOD models, not to multi-task models; drop it")
        self.options = options = multitask_options(cfg.options)
        self.device = torch.device(cfg.device)
        self.net = load_multitask_model(cfg.model).to(self.device).eval()
        target = options["target_task"]
        if target is not None and target not in self.net.tasks:
            raise ConfigError(f"--target-task '{target}' is not one of the model's tasks: {', '.join(self.net.tasks)}")
        name = cfg.attacks[0]
        check_attack_task([name], "multi-task dense prediction", "multi-task experiment")
        self.attack = create_attack(name, norm=cfg.norm, eps=cfg.eps[0], target_task=target, **cfg.params_for(name))
        data = load_multitask_dataset(cfg.dataset, seed=cfg.seed)
        missing = [t for t in self.net.tasks if t not in data.tasks]
        if missing:
            raise ConfigError(f"data set {cfg.dataset} has no ground truth for the model's task(s) "
                              f"{', '.join(missing)}")
        n = data.x_test.shape[0] if cfg.n_samples is None else min(cfg.n_samples, data.x_test.shape[0])
        self.tasks = tuple(self.net.tasks)
        self.x = data.x_test[:n]
        self.targets = {t: data.targets_test[t][:n] for t in self.tasks}
        hyper = self.attack.hyperparameters()
        hyper.pop("eps", None)
        config = ResolvedConfig(
            experiment=self.name, model=checkpoint_identity(cfg.model),
            arch=getattr(self.net, "checkpoint_meta", {}).get("arch"), dataset=cfg.dataset,
            data={"spec": cfg.dataset, "split": "test", "selection": "first", "tasks": list(self.tasks),
                  "fingerprint": tensor_fingerprint(self.x, *self.targets.values())},
            split_seed=cfg.seed, n_samples=n, norm=cfg.norm, eps=list(cfg.eps), attacks=[hyper], seed=cfg.seed,
            batch_size=cfg.batch_size, device=self.device.type, task="multitask", margin=options["margin"],
            tolerance=options["tolerance"])
        return Plan(config, n, cfg.batch_size, [])

    def dataset(self) -> Dataset:
        return TensorPairs(self.x, self.targets)

    def collate(self, items: Any) -> Any:
        return items

    def compute(self, batch: int, indices: np.ndarray, inputs: Any, generator: torch.Generator) -> BatchResult:
        """The attack is deterministic (it draws nothing), so ``generator`` is not used."""
        from advbench.multitask.metrics import stealth_success

        start_time = time.perf_counter()
        x = inputs[0].to(self.device)
        targets = {t: inputs[1][t].to(self.device) for t in self.tasks}
        adv, weights, rel, grads, order = [], [], [], 0, list(self.tasks)
        for start in range(0, x.shape[0], ATTACK_BATCH):
            result = self.attack(self.net, x[start:start + ATTACK_BATCH],
                                 {t: v[start:start + ATTACK_BATCH] for t, v in targets.items()})
            adv.append(result.x_adv)
            weights.append(result.weights.detach().double().cpu())
            rel.append(result.relative_change.detach().double().cpu())
            order, grads = list(result.tasks), grads + int(result.gradient_calls)
        x_adv = torch.cat(adv)
        clean_ps, clean_counts = measure(self.net, x, targets, self.tasks)
        adv_ps, adv_counts = measure(self.net, x_adv, targets, self.tasks)
        target = self.attack.target_task
        if target is not None:
            ok = stealth_success(clean_ps, adv_ps, target, margin=self.options["margin"],
                                 tolerance=self.options["tolerance"])
        else:
            ok = torch.zeros(x.shape[0], dtype=torch.bool)
        samples = []
        for j, index in enumerate(indices):
            row: dict[str, Any] = {"sample_index": int(index), "stealth_success": bool(ok[j])}
            for t in order:
                row[f"{t}_clean"], row[f"{t}_adv"] = float(clean_ps[t][j]), float(adv_ps[t][j])
            samples.append(row)
        return {"n": len(indices), "tasks": order, "clean": clean_counts, "adversarial": adv_counts,
                "stealth_successes": int(ok.sum()), "weight_sums": torch.cat(weights).sum(0).tolist(),
                "relative_change_sums": torch.cat(rel).sum(0).tolist(), "gradients": grads, "samples": samples,
                "wall_time_s": time.perf_counter() - start_time}

    def merge(self, config: dict[str, Any], warnings: Sequence[str], results: Sequence[BatchResult]
              ) -> dict[str, Any]:
        from advbench.models.task_heads import check_tasks
        from advbench.multitask.metrics import metric_change

        n = sum(int(r["n"]) for r in results)
        order = list(results[0]["tasks"])
        tasks = check_tasks(order)  # the canonical order of the set metrics
        clean_set = headline([r["clean"] for r in results], tasks)
        adv_set = headline([r["adversarial"] for r in results], tasks)
        change = metric_change(clean_set, adv_set)

        def mean_of(key: str) -> dict[str, float]:
            totals = [sum(r[key][k] for r in results) for k in range(len(order))]
            return {t: total / n for t, total in zip(order, totals, strict=True)}

        metrics: dict[str, Any] = {
            "tasks": order, "clean": clean_set, "adversarial": adv_set,
            "change": {t: {k: v for k, v in c.items() if k not in ("clean", "adv")} for t, c in change.items()},
            "weights": mean_of("weight_sums"), "relative_loss_change": mean_of("relative_change_sums")}
        target = config["attacks"][0].get("target_task")
        if target is not None:
            metrics.update({
                "target_task": target, "margin": config["margin"], "tolerance": config["tolerance"],
                "stealth_success_rate": sum(r["stealth_successes"] for r in results) / n,
                "target_degradation": change[target]["degradation"],
                "max_other_degradation": max((change[t]["degradation"] for t in order if t != target), default=0.0)})
        metrics["warnings"] = run_warnings(warnings)
        cost = {"gradients": sum(r["gradients"] for r in results),
                "wall_time_s": round(sum(r["wall_time_s"] for r in results), 4)}
        return {"metrics": metrics, "cost": cost, "samples": [s for r in results for s in r["samples"]]}

    def render(self, record: Any) -> Any:
        return multitask_table(record)

    def after_store(self, record: Any, wandb: dict[str, Any] | None) -> None:
        if wandb is None:
            return
        from advbench.tracking import WandbSink

        data = record.as_dict(samples=False)
        tags = ["multitask", *(a["name"] for a in data["config"]["attacks"])]
        with WandbSink(name=data["name"], config=data["config"], tags=tags, **wandb) as sink:
            sink.log_record(data)


def multitask_table(record: Any) -> Any:
    """Per task: clean and attacked metric, change, degradation and the learned weight / multiplier."""
    from rich.table import Table

    from advbench.pipeline.tables import fmt

    data = record.as_dict(samples=False) if hasattr(record, "as_dict") else record
    m, config = data["metrics"], data["config"]
    title = f"{config['attacks'][0]['name']} on {config['model']['name']}"
    if m.get("target_task"):
        title += (f" (target {m['target_task']}; stealth success {m['stealth_success_rate']:.3f} at margin "
                  f"{m['margin']:g}, tolerance {m['tolerance']:g})")
    table = Table(title=title)
    for col in ("task", "clean", "attacked", "change", "degradation", "weight"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for task in m["tasks"]:
        c = m["change"][task]
        table.add_row(task, fmt(m["clean"][task]), fmt(m["adversarial"][task]), fmt(c["change"]),
                      fmt(c["degradation"]), fmt(m["weights"][task]))
    return table
