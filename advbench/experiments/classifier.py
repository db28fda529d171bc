"""The classifier experiment: an attack cascade at every eps of a curve, optionally behind a defense.

Following AutoAttack (Croce & Hein, ICML 2020) each attack runs only on the samples that are still robust,
batch by batch: clean prediction, then the cascade on the batch's still-robust samples for every eps, before
the next batch (:func:`advbench.evaluate.cascade_batch`).  With a defense (``--defense``), each batch also
measures the undefended victim's clean accuracy and the transfer of examples crafted on the undefended victim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from advbench.errors import ConfigError
from advbench.evaluate import build_plan, cascade_batch, eps_key, merge_cascade
from advbench.pipeline.config import ResolvedConfig
from advbench.pipeline.experiment import EXPERIMENTS, BatchResult, Experiment, Plan, batch_generator


def attack_hyperparameters(config: Any) -> list[dict[str, Any]]:
    """Every attack of the config built once (unknown names and bad hyperparameters fail here, before any data
    is read), as the hyperparameters without eps that the record stores."""
    from advbench import create_attack
    from advbench.attack import check_attack_task

    check_attack_task(list(config.attacks), "classification", f"'{config.experiment or 'classifier'}' experiment")
    attacks = [create_attack(name, norm=config.norm, eps=config.eps[0], **config.params_for(name))
               .hyperparameters() for name in config.attacks]
    for params in attacks:
        params.pop("eps", None)
    return attacks


def require_gradients(differentiable: bool, attacks: Sequence[str], model_spec: str) -> None:
    """Refuse white-box attacks on a model without input gradients (int8, some TorchScript) before any work."""
    if differentiable:
        return
    import advbench
    from advbench.attack import ATTACKS

    names = advbench.list_attacks(task="classification")
    white = [a for a in attacks if ATTACKS.get(a).kind != "black-box"]
    if white:
        black = [n for n in names if ATTACKS.get(n).kind == "black-box"]
        raise ConfigError(
            f"{model_spec} has no input gradients (int8 or non-differentiable TorchScript), so the gradient attacks "
            f"{white} cannot run on it. Run black-box attacks ({', '.join(black)}) directly, or declare where "
            "gradients come from: add '?surrogate=PATH' (the float parent) or, for dynamic int8, '?gradients=bpda'")


@EXPERIMENTS.register("classifier")
class ClassifierExperiment(Experiment):
    """An attack cascade over an eps curve on one classifier (see the module docstring)."""

    name = "classifier"

    def resolve(self) -> Plan:
        from advbench.pipeline.victim import open_victim
        from advbench.runner import defend

        cfg = self.run_config
        if len(cfg.models) != 1:
            raise ConfigError(f"the classifier experiment evaluates one model at a time, got {len(cfg.models)}; "
                              "run them one by one, or use an ensemble recipe or `advbench compare`")
        attacks = attack_hyperparameters(cfg)
        self.eps_sorted, self.plan = build_plan(cfg.attacks, cfg.eps, cfg.norm, cfg.attack_params)
        victim = open_victim(cfg.model, cfg.dataset, seed=cfg.seed, device=cfg.device,
                             options=cfg.model_flags.options(), n_samples=cfg.n_samples, selection=cfg.selection,
                             samples=cfg.samples, class_map=cfg.class_map)
        require_gradients(victim.differentiable, cfg.attacks, cfg.model)
        self.victim, self.model, extra = victim, victim.model, {}
        if cfg.defense:
            self.model, extra["defense"] = defend(victim.model, cfg.defense, cfg.device)
        self.examples: dict[str, torch.Tensor] = {}
        config = ResolvedConfig(model=victim.identity, arch=victim.arch, dataset=cfg.dataset, data=victim.data,
                                split_seed=victim.split_seed, n_samples=victim.n_samples, norm=cfg.norm,
                                eps=cfg.eps, attacks=attacks, seed=cfg.seed, batch_size=cfg.batch_size,
                                device=torch.device(cfg.device).type, **extra)
        return Plan(config, victim.n_samples, cfg.batch_size, list(victim.warnings))

    def dataset(self):
        return self.victim.dataset()

    def collate(self, items: Any) -> Any:
        return items

    def compute(self, batch: int, indices: np.ndarray, inputs: Any, generator: torch.Generator) -> BatchResult:
        x, y = (t.to(self.run_config.device) for t in inputs)
        ids = [self.victim.stream.sample_ids[i] for i in indices]
        out = cascade_batch(self.model, x, y, self.plan, generator=generator, offset=int(indices[0]),
                            probe=batch == 0, keep_examples=not self.examples, sample_ids=ids)
        if out.x_adv and not self.examples:  # a few examples of the first batch computed here, for W&B
            self.examples = {"clean": x[:8].cpu(), "adversarial": out.x_adv[max(out.x_adv)][:8].cpu()}
        result = out.result
        if self.run_config.defense:  # transfer draws from a fresh generator of the batch: as if run on its own
            result["defense"] = self._defense_batch(x, y, batch_generator(self.run_config.seed, batch, x.device))
        return result

    def _defense_batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> dict[str, Any]:
        """Undefended clean correct count, and per eps the samples whose every transferred example (crafted on
        the undefended victim by each attack) the defended model still classifies correctly."""
        from advbench.evaluate import predict_labels

        victim = self.model.victim
        transfer = {}
        for eps in self.eps_sorted:
            robust = torch.ones_like(y, dtype=torch.bool)
            for attack in self.plan[eps]:
                x_adv = attack(victim, x, y, generator=generator).x_adv
                with torch.no_grad():
                    robust &= self.model(x_adv).argmax(dim=1) == y
            transfer[eps_key(eps)] = int(robust.sum())
        return {"undefended_correct": int((predict_labels(victim, x, max(len(x), 1)) == y).sum()), "transfer": transfer}

    def merge(self, plan_config: dict[str, Any], warnings: Sequence[str], results: Sequence[BatchResult]
              ) -> dict[str, Any]:
        eps_sorted = sorted(plan_config["eps"])
        merged = merge_cascade(results, eps_sorted, plan_config["norm"], warnings)
        last = merged["per_eps"][-1]
        metrics: dict[str, Any] = {
            "n": merged["n"], "norm": plan_config["norm"], "clean_accuracy": merged["clean_accuracy"],
            "robust_accuracy": last.robust_accuracy, "attack_success_rate": last.attack_success_rate,
            "per_attack": last.per_attack,
            "per_class_robust_accuracy": {str(k): v for k, v in last.per_class_robust_accuracy.items()},
            "mean_perturbation": last.mean_perturbation, "max_perturbation": last.max_perturbation,
            "warnings": merged["warnings"],
        }
        if len(eps_sorted) == 1:
            metrics["eps"] = last.eps
        else:
            metrics["curve"] = [{"eps": r.eps, "robust_accuracy": r.robust_accuracy,
                                 "attack_success_rate": r.attack_success_rate,
                                 "mean_perturbation": r.mean_perturbation, "per_attack": r.per_attack}
                                for r in merged["per_eps"]]
        if plan_config.get("defense"):
            n = merged["n"]
            metrics["defense"] = {
                **plan_config["defense"],
                "clean_accuracy_undefended": sum(r["defense"]["undefended_correct"] for r in results) / n,
                "transfer": {"attacks": [a["name"] for a in plan_config["attacks"]],
                             "robust_accuracy": {f"{e:g}": sum(r["defense"]["transfer"][eps_key(e)] for r in results)
                                                 / n for e in eps_sorted}}}
        cost = {"gradients": merged["gradients"], "queries": merged["queries"], "wall_time_s": merged["wall_time_s"],
                "per_attack_wall_time_s": merged["per_attack_wall_time_s"]}
        return {"metrics": metrics, "cost": cost, "samples": merged["samples"]}

    def after_store(self, record: Any, wandb: dict[str, Any] | None) -> None:
        if wandb is None:
            return
        from advbench.tracking import WandbSink

        data = record.as_dict(samples=False)
        tags = [data["config"]["norm"], *(a["name"] for a in data["config"]["attacks"])]
        with WandbSink(name=data["name"], config=data["config"], tags=tags, **wandb) as sink:
            sink.log_record(data, images=self.examples or None)
