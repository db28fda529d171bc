"""The min-max recipe experiment: one multi-domain attack (ensemble, universal, transformations) over an eps list.

The recipes solve the regularised min-max problem of Wang, Zhang, Liu et al., "Adversarial Attack Generation
Empowered by Min-Max Optimization" (NeurIPS 2021, arXiv 1906.03563) with APGDA (:mod:`advbench.minmax`).  A
run evaluates exactly one recipe (several ``--model`` values only for the ``*-ensemble`` recipes, whose domains
are the models), batch by batch:

* only the samples that every domain classifies correctly before the attack are attacked (for an ensemble:
  every member; otherwise the model on the clean input), so an ASR means "flipped a correct decision";
* the universal recipes share one perturbation over each group of ``k`` consecutive correctly classified
  samples *of the batch*; the batch's remainder (fewer than ``k`` samples) is left out, so ``--batch-size``
  must be a multiple of ``k`` (a batch whose samples are all correct then loses none);
* per eps the batch reports counters, not means: the number of rows (one per input, or per group for a
  universal recipe), the rows fooled in every domain, the rows fooled per domain, and per domain the sum over
  rows of the learned weight and of its trace over the iterations.

:meth:`MinMaxExperiment.merge` divides the summed counters by the summed rows, so ``asr_all``, ``asr_avg``,
``per_domain``, ``weights`` (the mean learned weight per domain) and ``weight_trace`` (the mean weight per
domain at each iteration) are means over every row of the run: the batch means weighted by each batch's row
count, exactly what one pass over all rows gives.  The metrics have the shape of
:meth:`advbench.multidomain_eval.MultiDomainResult.summary`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advbench.errors import ConfigError
from advbench.pipeline.config import ResolvedConfig
from advbench.pipeline.experiment import EXPERIMENTS, BatchResult, Experiment, Plan

_EMPTY_EPS = {"asr_all": 0.0, "asr_avg": 0.0, "per_domain": {}, "weights": {}, "weight_trace": []}


def clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Samples that every domain model gets right: every member of an ensemble, else the model itself."""
    members = getattr(model, "members", [model])
    with torch.no_grad():
        return torch.stack([m(x).argmax(1) == y for m in members]).all(dim=0)


def multidomain_counts(out: Any) -> dict[str, Any]:
    """One attack output's counters (see the module docstring): summable over batches."""
    success = out.extras["domain_success"].float()  # (rows, K)
    return {
        "names": list(out.extras["domain_names"]),
        "rows": int(success.shape[0]),
        "all": int(success.all(dim=1).sum()),
        "per_domain": [int(v) for v in success.sum(dim=0).tolist()],
        "weights": [float(v) for v in out.weights.float().sum(dim=0).tolist()],
        "weight_trace": out.weight_trace.float().sum(dim=1).tolist(),  # (steps + 1, K)
    }


def merge_counts(counts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every batch's counters at one eps -> asr_all, asr_avg, per-domain ASR, mean weights and weight trace."""
    counts = [c for c in counts if c["rows"]]
    if not counts:
        return dict(_EMPTY_EPS)
    names = counts[0]["names"]
    rows = sum(c["rows"] for c in counts)
    k = len(names)
    per_domain = [sum(c["per_domain"][i] for c in counts) for i in range(k)]
    weights = [sum(c["weights"][i] for c in counts) for i in range(k)]
    steps = len(counts[0]["weight_trace"])
    trace = [[sum(c["weight_trace"][s][i] for c in counts) / rows for i in range(k)] for s in range(steps)]
    return {
        "asr_all": sum(c["all"] for c in counts) / rows,
        "asr_avg": sum(per_domain) / (rows * k),
        "per_domain": {n: per_domain[i] / rows for i, n in enumerate(names)},
        "weights": {n: weights[i] / rows for i, n in enumerate(names)},
        "weight_trace": trace,
    }


@EXPERIMENTS.register("minmax")
class MinMaxExperiment(Experiment):
    """One min-max recipe at every eps of the config (see the module docstring)."""

    name = "minmax"

    def resolve(self) -> Plan:
        from advbench import create_attack
        from advbench.attack import ATTACKS
        from advbench.attacks.ensemble import ModelEnsemble
        from advbench.experiments.classifier import attack_hyperparameters, require_gradients
        from advbench.pipeline.victim import open_victim

        cfg = self.run_config
        if len(cfg.attacks) != 1:
            raise ConfigError("a min-max recipe runs on its own, not in a cascade: pass exactly one --attack "
                              f"(got {', '.join(cfg.attacks)})")
        attack = cfg.attacks[0]
        if not getattr(ATTACKS.get(attack), "multi_domain", False):
            raise ConfigError(f"'{attack}' is not a min-max recipe; run it with the classifier experiment")
        if cfg.defense:
            raise ConfigError("--defense is not supported with a min-max recipe; evaluate the defense with "
                              "single-model attacks (the classifier experiment)")
        if cfg.options:
            raise ConfigError(f"the minmax experiment takes no options, got {sorted(cfg.options)}")
        ensemble = attack.endswith("-ensemble")
        if ensemble and len(cfg.models) < 2:
            raise ConfigError(f"'{attack}' attacks an ensemble: pass at least 2 models (--model a,b)")
        if not ensemble and len(cfg.models) != 1:
            raise ConfigError(f"'{attack}' attacks one model at a time, got {len(cfg.models)}; use an ensemble "
                              "recipe (minmax-ensemble, avg-ensemble) for several models")
        hyper = attack_hyperparameters(cfg)
        params = cfg.params_for(attack)
        self.eps_sorted = sorted(set(cfg.eps))
        self.atks = {e: create_attack(attack, norm=cfg.norm, eps=e, **params) for e in self.eps_sorted}
        self.k = int(getattr(self.atks[self.eps_sorted[0]], "k", 1)) if "universal" in attack else 1
        if cfg.batch_size % self.k:
            raise ConfigError(f"'{attack}' shares one perturbation over groups of k={self.k} inputs within a batch; "
                              f"--batch-size {cfg.batch_size} is not a multiple of k: pick a batch size that is "
                              f"(e.g. {max(self.k, cfg.batch_size - cfg.batch_size % self.k)})")
        victims = [open_victim(m, cfg.dataset, seed=cfg.seed, device=cfg.device,
                               options=cfg.model_flags.options(), n_samples=cfg.n_samples, selection=cfg.selection,
                               samples=cfg.samples, class_map=cfg.class_map) for m in cfg.models]
        for victim, spec in zip(victims, cfg.models, strict=True):
            require_gradients(victim.differentiable, cfg.attacks, spec)
        first = victims[0]
        if first.n_samples < self.k:
            raise ConfigError(f"k={self.k} is larger than the {first.n_samples} selected samples; lower --k or "
                              "raise --n-samples")
        warnings = [w for v in victims for w in v.warnings]
        if len({v.split_seed for v in victims}) > 1:
            warnings.append(f"the models were trained with different split seeds; evaluating on the split of "
                            f"{cfg.models[0]}")
        if ensemble:
            names = [v.identity.get("name", m) for v, m in zip(victims, cfg.models, strict=True)]
            self.model = ModelEnsemble([v.model for v in victims], names=names)
        else:
            self.model = first.model
        self.victim, self.attack = first, attack
        extra: dict[str, Any] = {}
        if len(victims) > 1:
            extra["models"] = [v.identity for v in victims]
            model = {"name": "+".join(str(v.identity["name"]) for v in victims)}
        else:
            model = first.identity
        config = ResolvedConfig(experiment=self.name, model=model, arch=first.arch if len(victims) == 1 else None,
                                dataset=cfg.dataset, data=first.data, split_seed=first.split_seed,
                                n_samples=first.n_samples, norm=cfg.norm, eps=cfg.eps, attacks=hyper, seed=cfg.seed,
                                batch_size=cfg.batch_size, device=torch.device(cfg.device).type, **extra)
        return Plan(config, first.n_samples, cfg.batch_size, warnings)

    def dataset(self):
        return self.victim.dataset()

    def collate(self, items: Any) -> Any:
        return items

    def compute(self, batch: int, indices: np.ndarray, inputs: Any, generator: torch.Generator) -> BatchResult:
        """The recipe at every eps (ascending) on the batch's correctly classified samples (whole groups of k
        for a universal recipe), all with ``generator``; per-eps counters and per-sample rows."""
        start = time.perf_counter()
        x, y = (t.to(self.run_config.device) for t in inputs)
        keep = clean_correct(self.model, x, y)
        pos = keep.nonzero().flatten()
        pos = pos[: pos.numel() - pos.numel() % self.k]
        xs, ys = x[pos], y[pos]
        ids = self.victim.stream.sample_ids
        per_eps, rows, grads, queries = {}, [], 0, 0
        for eps in self.eps_sorted:
            if not pos.numel():
                per_eps[repr(float(eps))] = {"rows": 0}
                continue
            out = self.atks[eps](self.model, xs, ys, generator=generator)
            grads += out.total_gradients
            queries += out.total_queries
            per_eps[repr(float(eps))] = multidomain_counts(out)
            success = out.success.tolist()
            for j, p in enumerate(pos.tolist()):
                index = int(indices[p])
                rows.append({"sample_index": index, "sample_id": ids[index], "eps": eps, "label": int(ys[j]),
                             "clean_correct": True, "robust": not success[j],
                             "broken_by": self.attack if success[j] else None})
        return {"n": int(x.shape[0]), "n_used": int(pos.numel()), "per_eps": per_eps, "samples": rows,
                "gradients": grads, "queries": queries, "wall_time_s": time.perf_counter() - start}

    def merge(self, config: dict[str, Any], warnings: Sequence[str], results: Sequence[BatchResult]
              ) -> dict[str, Any]:
        eps_sorted = sorted(set(config["eps"]))
        per_eps = [{"eps": eps, **merge_counts([r["per_eps"][repr(float(eps))] for r in results])}
                   for eps in eps_sorted]
        last = per_eps[-1]
        n_used = sum(int(r["n_used"]) for r in results)
        metrics: dict[str, Any] = {
            "n": n_used, "n_evaluated": sum(int(r["n"]) for r in results), "attack": config["attacks"][0]["name"],
            **{k: v for k, v in last.items() if k != "weight_trace"}, "weight_trace": last["weight_trace"]}
        if len(per_eps) > 1:
            metrics.pop("eps")
            metrics["curve"] = [{k: v for k, v in p.items() if k != "weight_trace"} for p in per_eps]
        notes = [{"name": "RunWarning", "message": m} for m in warnings]
        if not n_used:
            notes.append({"name": "RunWarning", "message": "no sample was attacked: no selected sample (or group of "
                          "k samples in a batch) is classified correctly by every domain"})
        metrics["warnings"] = notes
        cost = {"gradients": sum(int(r["gradients"]) for r in results),
                "queries": sum(int(r["queries"]) for r in results),
                "wall_time_s": round(sum(float(r["wall_time_s"]) for r in results), 4)}
        return {"metrics": metrics, "cost": cost, "samples": [row for r in results for row in r["samples"]]}

    def render(self, record: Any) -> Any:
        from advbench.pipeline.tables import multidomain_table

        return multidomain_table(record)

    def after_store(self, record: Any, wandb: dict[str, Any] | None) -> None:
        if wandb is None:
            return
        from advbench.tracking import WandbSink

        data = record.as_dict(samples=False)
        metrics = data["metrics"]
        with WandbSink(name=data["name"], config=data["config"], tags=[data["config"]["norm"], metrics["attack"]],
                       **wandb) as sink:
            sink.log_record(data)
            sink.log_weight_trace(metrics["weight_trace"], list(metrics["weights"]))
