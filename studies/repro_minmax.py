"""Reproduce the min-max vs averaging comparisons of Wang et al. (NeurIPS 2021) on sklearn digits.

One command (about 2-3 minutes on 2 CPU cores):

    .venv/bin/python studies/repro_minmax.py [--out docs/minmax_results.md] [--steps 50]

1. Ensemble: four heterogeneous models (small_cnn, mlp, lenet5, and two PGD-adversarially-trained
   ones), linf, 50 APGDA steps, gamma 4: ASR_all of averaging vs min-max at three eps, and the learned
   weight of each model.
2. Universal perturbation: one delta per group of K=5 inputs on small_cnn: group ASR (all 5 fooled).
3. Transformations: minmax-transform vs EOT over the published family set on small_cnn.

The tables are written as Markdown (default docs/minmax_results.md) and printed.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from advbench.attacks.ensemble import ModelEnsemble  # noqa: E402
from advbench.datasets import load_dataset  # noqa: E402
from advbench.multidomain_eval import evaluate_multidomain  # noqa: E402
from advbench.training import TrainConfig, train_classifier  # noqa: E402

MEMBERS = [
    ("small_cnn", {}),
    ("mlp", {}),
    ("lenet5", {}),
    ("mlp", {"adversarial": "pgd", "adv_eps": 0.15, "adv_steps": 7}),
    ("small_cnn", {"adversarial": "pgd", "adv_eps": 0.1, "adv_steps": 7}),
]


def _fmt(v: float) -> str:
    return f"{100 * v:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/minmax_results.md")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--n", type=int, default=360, help="test samples considered")
    args = parser.parse_args()
    start = time.time()
    data = load_dataset("digits", seed=0)
    x, y = data.x_test[: args.n], data.y_test[: args.n]
    models, names = [], []
    for arch, extra in MEMBERS:
        cfg = TrainConfig(arch=arch, dataset="digits", epochs=10, seed=0, **extra)
        model, meta = train_classifier(cfg, progress=False)
        models.append(model)
        names.append(arch + ("-adv" if extra else ""))
        print(f"trained {names[-1]}: test accuracy {meta['test_accuracy']:.3f}")
    ensemble = ModelEnsemble(models, names)
    lines = ["# Min-max vs averaging on sklearn digits (reproduction)", "",
             f"`studies/repro_minmax.py`, {args.steps} APGDA steps, linf, gamma 4, C&W margin (kappa 50), "
             "alpha/beta as published for MNIST (4 / 50). Only samples every domain classifies correctly "
             "are attacked.", ""]

    lines += ["## Ensemble of 5 models (2 adversarially trained)", "",
              "| eps | ASR_all averaging | ASR_all min-max | " + " | ".join(f"w {n}" for n in names) + " |",
              "|---" * (3 + len(names)) + "|"]
    for eps in (0.1, 0.15, 0.2):
        res = {a: evaluate_multidomain(ensemble, x, y, attack=a, eps=[eps], params={"steps": args.steps,
                                                                                   "early_stop": False})
               for a in ("avg-ensemble", "minmax-ensemble")}
        mm, avg = res["minmax-ensemble"].per_eps[0], res["avg-ensemble"].per_eps[0]
        lines.append(f"| {eps} | {_fmt(avg['asr_all'])} | {_fmt(mm['asr_all'])} | "
                     + " | ".join(f"{mm['weights'][n]:.3f}" for n in names) + " |")
        print(lines[-1])
    lines += ["", "Per-model ASR of min-max at the largest eps: "
              + ", ".join(f"{n} {_fmt(v)}" for n, v in mm["per_domain"].items()), ""]

    cnn = models[0]
    lines += ["## Universal perturbation, K = 5 inputs per perturbation (small_cnn)", "",
              "| eps | group ASR averaging | group ASR min-max | input ASR averaging | input ASR min-max |",
              "|---|---|---|---|---|"]
    for eps in (0.2, 0.25, 0.3):
        r = {a: evaluate_multidomain(cnn, x, y, attack=a, eps=[eps], params={"steps": args.steps, "k": 5})
             .per_eps[0] for a in ("avg-universal", "minmax-universal")}
        lines.append(f"| {eps} | {_fmt(r['avg-universal']['asr_all'])} | {_fmt(r['minmax-universal']['asr_all'])} | "
                     f"{_fmt(r['avg-universal']['asr_avg'])} | {_fmt(r['minmax-universal']['asr_avg'])} |")
        print(lines[-1])

    lines += ["", "## Transformations: min-max vs EOT (small_cnn)", "",
              "Families: identity, hflip, vflip, brightness +0.1, gamma 1.3, crop-and-resize (80%).", "",
              "| eps | ASR_all EOT | ASR_all min-max | most weighted family |", "|---|---|---|---|"]
    for eps in (0.1, 0.15, 0.2):
        r = {a: evaluate_multidomain(cnn, x, y, attack=a, eps=[eps], params={"steps": args.steps}).per_eps[0]
             for a in ("eot", "minmax-transform")}
        weights = r["minmax-transform"]["weights"]
        lines.append(f"| {eps} | {_fmt(r['eot']['asr_all'])} | {_fmt(r['minmax-transform']['asr_all'])} | "
                     f"{max(weights, key=weights.get)} ({max(weights.values()):.2f}) |")
        print(lines[-1])
    lines += ["", "## The paper's numbers, for context (Wang et al., NeurIPS 2021)", "",
              "- MNIST linf ensemble, ASR_all: averaging 48.2% vs min-max 90.2%.",
              "- CIFAR-10 ensemble by norm (l0/l1/l2/linf): 66.6→73.8, 66.2→83.1, 76.4→85.0, 70.5→81.2.",
              "- Universal perturbation, CIFAR-10 linf, K=5: gains of 8 to 15 points per model.",
              "- Transformations vs EOT: gains of 4 to 6 points.",
              "- The learned weights rank domains by difficulty: the most robust model gets the largest weight.",
              "", f"Run time: {time.time() - start:.0f} s on {torch.get_num_threads()} threads.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
