"""The SOD experiment: a salient-object-detection model under clouds, adversarial clouds and PGD, batch by batch.

The evaluation protocol of the DefenseNet study (Sun, Fu, Li et al., "Adversarial cloud attack and DefenseNet",
arXiv 2306.17431), as :func:`advbench.sod.robustness.sod_robustness` runs it on a whole
set, cut into the pipeline's batches: the rows ``clean``, ``cloudy``, ``adv-cloud`` and ``pgd`` on the victim,
and with ``--defense`` the same rows through the defense (white-box through it) plus the examples crafted on the
undefended victim fed to the defended pipeline (``(transfer)`` rows).  Each row is scored with the SOD metrics of
:mod:`advbench.sod.metrics` (MAE, F-measure of Achanta et al., CVPR 2009; S-measure of Fan et al., ICCV 2017;
E-measure of Fan et al., IJCAI 2018).

Batches and the whole-set numbers:

* every batch draws its clouds (one per image and cloud sample) from one seed taken from the batch generator
  (:func:`cloud_seed`), on the CPU, exactly as ``sod_robustness(..., seed=cloud_seed(generator))`` draws them
  for that batch's images;
* MAE, S-measure and the adaptive F/E-measures of the set are means of per-image values, so a batch keeps their
  sums; ``max_f``, ``mean_f``, ``max_e`` and ``mean_e`` are the maximum and the mean of the *image-averaged*
  F- and E-curves (256 thresholds), not means of per-image values, so a batch keeps the sum of its images'
  curves.  :meth:`SODExperiment.merge` adds them up and divides by the number of images, as
  :class:`advbench.sod.metrics.SODMetrics` does over the whole set.

The per-sample rows hold every image's own values (``rows[row][metric]``; an image's ``max_f`` is the maximum of
its own curve, for reading, not what the set's ``max_f`` averages).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
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

#: The attacks an SOD run can include, in the order their rows appear.
SOD_ATTACK_ORDER = ("adv-cloud", "pgd")
#: The set-level metrics that are means of per-image values (a batch keeps their sums).
MEAN_METRICS = ("mae", "adaptive_f", "s_measure", "adaptive_e")
#: The order of the metrics in a row, as :meth:`advbench.sod.metrics.SODMetrics.compute` gives them.
ROW_METRICS = ("mae", "max_f", "mean_f", "adaptive_f", "s_measure", "max_e", "mean_e", "adaptive_e")
#: The columns of the table.
TABLE_COLUMNS = ("mae", "max_f", "mean_f", "s_measure", "mean_e")


def cloud_config(eps: float, attack_params: dict[str, dict[str, Any]]) -> Any:
    """The :class:`~advbench.sod.robustness.CloudAttackConfig` of ``--param adv-cloud.NAME=VALUE`` (any field
    but ``eps_n``, which is ``--eps``, and ``pgd_steps``) and ``--param pgd.steps=N``, checked before any data
    is read."""
    from advbench.attacks.adv_cloud import MODES
    from advbench.attacks.clouds import CloudSpec
    from advbench.sod.robustness import CloudAttackConfig

    knobs = dict(attack_params.get("adv-cloud", {}))
    pgd = dict(attack_params.get("pgd", {}))
    fields = [f for f in CloudAttackConfig.__dataclass_fields__ if f not in ("eps_n", "pgd_steps")]
    unknown = [*(f"adv-cloud.{k}" for k in sorted(set(knobs) - set(fields))),
               *sorted(f"pgd.{k}" for k in pgd if k != "steps")]
    if unknown:
        raise ConfigError(f"SOD runs take --param adv-cloud.NAME=VALUE with NAME in {', '.join(fields)} and "
                          f"--param pgd.steps=N; got {', '.join(unknown)}")
    if "steps" in pgd:
        knobs["pgd_steps"] = pgd["steps"]
    for name in ("steps", "clouds", "pgd_steps"):
        value = knobs.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            where = "pgd.steps" if name == "pgd_steps" else f"adv-cloud.{name}"
            raise ConfigError(f"--param {where} must be a positive integer, got {value!r}")
    for name in ("eps_e", "mask_bound", "coverage", "thickness"):
        value = knobs.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"--param adv-cloud.{name} must be a number, got {value!r}")
        if value is not None:
            knobs[name] = float(value)
    if knobs.get("mode", "minmax") not in MODES:
        raise ConfigError(f"--param adv-cloud.mode must be one of {', '.join(MODES)}, got {knobs['mode']!r}")
    cfg = CloudAttackConfig(eps_n=float(eps), **knobs)
    cfg.budget()  # budgets >= 0, else a ConfigError naming the field
    CloudSpec(coverage=cfg.coverage, thickness=cfg.thickness)  # coverage and thickness in [0, 1]
    return cfg


def cloud_seed(generator: torch.Generator) -> int:
    """The seed of a batch's clouds: one ``torch.randint`` draw from the batch generator.

    Clouds are drawn on the CPU whatever the device (as in ``sod_robustness``), so a generator on another device
    is replaced by a CPU generator with its seed: a GPU run draws the clouds a CPU run draws."""
    source = generator if generator.device.type == "cpu" else torch.Generator().manual_seed(generator.initial_seed())
    return int(torch.randint(0, 2**62, (1,), generator=source))


def sod_predictions(victim: nn.Module, x: torch.Tensor, gt: torch.Tensor, *, defended: nn.Module | None,
                    cfg: Any, attacks: Sequence[str], seed: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The probability maps of every row of ``sod_robustness`` on images ``x`` (masks ``gt``), clouds from
    ``seed``, and the defense's inference cost on ``x`` (empty without a defense).  Rows in the order
    ``sod_robustness`` reports them."""
    from dataclasses import replace

    from advbench.attacks.adv_cloud import CloudBudget
    from advbench.attacks.clouds import CloudSpec, cloudify, sample_clouds
    from advbench.progress import progress_bar
    from advbench.sod.robustness import attack_sod_batch, inference_cost, predict_saliency

    gen = torch.Generator().manual_seed(seed)
    spec = CloudSpec(coverage=cfg.coverage, thickness=cfg.thickness)
    b, _, h, w = x.shape
    masks = sample_clouds(spec, b * cfg.clouds, h, w, gen).to(x).view(b, cfg.clouds, 1, h, w)
    cloudy = cloudify(x, masks[:, 0], spec.colour)
    budgets = {"adv-cloud": (masks, cfg, cfg.budget()),
               "pgd": (torch.zeros_like(masks[:, :1]), replace(cfg, steps=cfg.pgd_steps),
                       CloudBudget(eps_e=0.0, eps_n=cfg.eps_n))}
    bar = progress_bar(total=0, desc="sod attacks", unit="step", enabled=False)
    preds: dict[str, torch.Tensor] = {}
    cost: dict[str, float] = {}
    try:
        crafted = {a: attack_sod_batch(victim, x, gt, *budgets[a], bar=bar) for a in attacks}
        for name, images in (("clean", x), ("cloudy", cloudy), *crafted.items()):
            preds[name] = predict_saliency(victim, images)
        if defended is not None:
            adaptive = {a: attack_sod_batch(defended, x, gt, *budgets[a], bar=bar) for a in attacks}
            for name, images in (("clean", x), ("cloudy", cloudy), *adaptive.items()):
                preds[f"defended {name}"] = predict_saliency(defended, images)
            for name, images in crafted.items():
                preds[f"defended {name} (transfer)"] = predict_saliency(defended, images)
            cost = inference_cost(victim, defended, x)
    finally:
        bar.close()
    return preds, cost


def image_metrics(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: ``mae``, ``adaptive_f``, ``s_measure``, ``adaptive_e`` ``(B,)`` and the F- and E-curves
    ``f_curve``, ``e_curve`` ``(B, 256)``, float64 (the definitions of :mod:`advbench.sod.metrics`)."""
    from advbench.sod.metrics import (
        adaptive_e_measure,
        adaptive_f_measure,
        e_measure_curve,
        f_measure_curve,
        mae,
        s_measure,
    )

    return {"mae": mae(pred, gt), "adaptive_f": adaptive_f_measure(pred, gt), "s_measure": s_measure(pred, gt),
            "adaptive_e": adaptive_e_measure(pred, gt), "f_curve": f_measure_curve(pred, gt),
            "e_curve": e_measure_curve(pred, gt)}


def merge_rows(results: Sequence[BatchResult]) -> dict[str, dict[str, Any]]:
    """Every row's set metrics from the batches' sums: means of the per-image metrics, and max / mean of the
    image-averaged F- and E-curves (what :meth:`advbench.sod.metrics.SODMetrics.compute` gives on the set)."""
    from advbench.sod.metrics import NUM_THRESHOLDS

    n = sum(int(r["n"]) for r in results)
    rows: dict[str, dict[str, Any]] = {}
    for row in results[0]["sums"]:
        totals = dict.fromkeys(MEAN_METRICS, 0.0)
        f_curve = torch.zeros(NUM_THRESHOLDS, dtype=torch.float64)
        e_curve = torch.zeros(NUM_THRESHOLDS, dtype=torch.float64)
        for result in results:
            sums = result["sums"][row]
            for key in MEAN_METRICS:
                totals[key] += sums[key]
            f_curve += torch.tensor(sums["f_curve"], dtype=torch.float64)
            e_curve += torch.tensor(sums["e_curve"], dtype=torch.float64)
        f_curve, e_curve = f_curve / n, e_curve / n
        rows[row] = {"mae": totals["mae"] / n, "max_f": float(f_curve.max()), "mean_f": float(f_curve.mean()),
                     "adaptive_f": totals["adaptive_f"] / n, "s_measure": totals["s_measure"] / n,
                     "max_e": float(e_curve.max()), "mean_e": float(e_curve.mean()),
                     "adaptive_e": totals["adaptive_e"] / n, "n_images": n}
    return rows


@EXPERIMENTS.register("sod")
class SODExperiment(Experiment):
    """Clean, cloudy, adversarial-cloud and PGD rows of an SOD model (see the module docstring)."""

    name = "sod"

    def resolve(self) -> Plan:
        from advbench.datasets.sod import load_sod_dataset
        from advbench.runner import defend
        from advbench.training.sod import load_sod_model

        cfg = self.run_config
        check_common(cfg, "SOD")
        unknown = [a for a in cfg.attacks if a not in SOD_ATTACK_ORDER]
        if unknown:
            raise ConfigError(f"an SOD model is evaluated with {', '.join(SOD_ATTACK_ORDER)}, not "
                              f"{', '.join(unknown)}")
        if cfg.norm != "linf":
            raise ConfigError(f"SOD attacks have an linf budget (--eps); drop --norm {cfg.norm}")
        self.attack_names = [a for a in SOD_ATTACK_ORDER if a in cfg.attacks]
        self.cloud_cfg = cloud_config(cfg.eps[0], cfg.attack_params)
        self.device = torch.device(cfg.device)
        self.victim = load_sod_model(cfg.model).to(self.device).eval()
        data = load_sod_dataset(cfg.dataset)
        n = data.x_test.shape[0] if cfg.n_samples is None else min(cfg.n_samples, data.x_test.shape[0])
        self.x, self.gt = data.x_test[:n], data.m_test[:n]
        self.defended: nn.Module | None = None
        extra: dict[str, Any] = {}
        if cfg.defense:
            self.defended, extra["defense"] = defend(self.victim, cfg.defense, str(self.device))
            self.defended.eval()
        c = self.cloud_cfg
        per_attack = {"adv-cloud": {"eps_e": c.eps_e, "mask_bound": c.mask_bound, "steps": c.steps,
                                    "clouds": c.clouds, "mode": c.mode, "coverage": c.coverage,
                                    "thickness": c.thickness},
                      "pgd": {"steps": c.pgd_steps}}
        config = ResolvedConfig(
            experiment=self.name, model=checkpoint_identity(cfg.model),
            arch=getattr(self.victim, "checkpoint_meta", {}).get("arch"), dataset=cfg.dataset,
            data={"spec": cfg.dataset, "split": "test", "selection": "first",
                  "fingerprint": tensor_fingerprint(self.x, self.gt)},
            n_samples=n, norm="linf", eps=list(cfg.eps),
            attacks=[{"name": a, **per_attack[a]} for a in self.attack_names], seed=cfg.seed,
            batch_size=cfg.batch_size, device=self.device.type, task="sod", attack=dict(c.__dict__), **extra)
        return Plan(config, n, cfg.batch_size, [])

    def dataset(self) -> Dataset:
        return TensorPairs(self.x, self.gt)

    def collate(self, items: Any) -> Any:
        return items

    def compute(self, batch: int, indices: np.ndarray, inputs: Any, generator: torch.Generator) -> BatchResult:
        start = time.perf_counter()
        x, gt = (t.to(self.device) for t in inputs)
        preds, cost = sod_predictions(self.victim, x, gt, defended=self.defended, cfg=self.cloud_cfg,
                                      attacks=self.attack_names, seed=cloud_seed(generator))
        sums: dict[str, dict[str, Any]] = {}
        per_image: dict[str, dict[str, list[float]]] = {}
        for row, pred in preds.items():
            values = image_metrics(pred, gt)
            sums[row] = {**{k: float(values[k].sum()) for k in MEAN_METRICS},
                         "f_curve": values["f_curve"].sum(0).tolist(), "e_curve": values["e_curve"].sum(0).tolist()}
            per_image[row] = {**{k: values[k].tolist() for k in MEAN_METRICS},
                              "max_f": values["f_curve"].max(1).values.tolist(),
                              "mean_f": values["f_curve"].mean(1).tolist(),
                              "max_e": values["e_curve"].max(1).values.tolist(),
                              "mean_e": values["e_curve"].mean(1).tolist()}
        samples = [{"sample_index": int(i),
                    "rows": {row: {k: per_image[row][k][j] for k in ROW_METRICS} for row in per_image}}
                   for j, i in enumerate(indices)]
        return {"n": len(indices), "sums": sums, "samples": samples, "inference": cost,
                "wall_time_s": time.perf_counter() - start}

    def merge(self, config: dict[str, Any], warnings: Sequence[str], results: Sequence[BatchResult]
              ) -> dict[str, Any]:
        from advbench.attacks.clouds import CloudSpec

        attack = config["attack"]
        n = sum(int(r["n"]) for r in results)
        metrics: dict[str, Any] = {
            "rows": merge_rows(results), "n_images": n, "attacks": [a["name"] for a in config["attacks"]],
            "attack": attack,
            "clouds": CloudSpec(coverage=attack["coverage"], thickness=attack["thickness"]).to_dict(),
            "warnings": run_warnings(warnings)}
        cost: dict[str, Any] = {"wall_time_s": round(sum(r["wall_time_s"] for r in results), 4)}
        timed = [r["inference"] for r in results if r["inference"]]
        if timed:  # seconds for one pass over the set: the batches' median times added up
            victim_s, defended_s = sum(t["victim_s"] for t in timed), sum(t["defended_s"] for t in timed)
            cost.update({"victim_s": victim_s, "defended_s": defended_s,
                         "ratio": defended_s / victim_s if victim_s > 0 else math.nan})
        samples = [s for r in results for s in r["samples"]]
        return {"metrics": metrics, "cost": cost, "samples": samples}

    def render(self, record: Any) -> Any:
        return sod_table(record)

    def after_store(self, record: Any, wandb: dict[str, Any] | None) -> None:
        if wandb is None:
            return
        from advbench.tracking import WandbSink

        data = record.as_dict(samples=False)
        tags = ["sod", *(a["name"] for a in data["config"]["attacks"])]
        with WandbSink(name=data["name"], config=data["config"], tags=tags, **wandb) as sink:
            sink.log_record(data)


def sod_table(record: Any) -> Any:
    """One row per condition, columns the SOD metrics (the table ``advbench run`` prints for an SOD model)."""
    from rich.table import Table

    from advbench.pipeline.tables import fmt

    data = record.as_dict(samples=False) if hasattr(record, "as_dict") else record
    config = data["config"]
    table = Table(title=f"SOD robustness of {config['model'].get('name')} on {config['dataset']}")
    table.add_column("condition")
    for col in TABLE_COLUMNS:
        table.add_column(col, justify="right")
    for name, metrics in data["metrics"]["rows"].items():
        table.add_row(name, *(fmt(metrics.get(c)) for c in TABLE_COLUMNS))
    return table
