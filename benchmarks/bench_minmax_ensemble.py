"""Time of one min-max ensemble iteration vs the sum of the K models' forward+backward on the same batch.

    .venv/bin/python benchmarks/bench_minmax_ensemble.py [--batch 256] [--steps 20] [--threads N] [--json]

Baseline: for each of the K models, one forward pass and one backward pass to the input on the same
batch (the work any ensemble attack must do per iteration).  advbench: APGDA on ``minmax-ensemble``
(early stop off), total time divided by its number of gradient evaluations (steps + 1).  Goal: <= 1.10.
Models: small_cnn, lenet5, mlp and resnet20 on 1x28x28 inputs (weights do not change the cost).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

os.environ.setdefault("WANDB_MODE", "disabled")

import advbench  # noqa: E402
from advbench.attacks.ensemble import ModelEnsemble  # noqa: E402
from advbench.models import create_model  # noqa: E402


def _baseline(models, x, y) -> float:
    start = time.perf_counter()
    for model in models:
        xi = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xi), y, reduction="sum")
        torch.autograd.grad(loss, xi)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    models = [create_model(a, input_shape=(1, 28, 28), num_classes=10).eval()
              for a in ("small_cnn", "lenet5", "mlp", "resnet20")]
    for m in models:
        for p in m.parameters():
            p.requires_grad_(False)
    ensemble = ModelEnsemble(models)
    x = torch.rand((args.batch, 1, 28, 28), generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    attack = advbench.create_attack("minmax-ensemble", eps=0.1, steps=args.steps, early_stop=False)
    _baseline(models, x, y)
    attack(ensemble, x, y)  # warm-up
    base, ours = [], []
    for _ in range(args.repeats):
        base.append(statistics.median(_baseline(models, x, y) for _ in range(3)))
        start = time.perf_counter()
        attack(ensemble, x, y)
        ours.append((time.perf_counter() - start) / (args.steps + 1))
    ratio = statistics.median(ours) / statistics.median(base)
    result = {"batch": args.batch, "K": len(models), "steps": args.steps, "threads": torch.get_num_threads(),
              "baseline_s": statistics.median(base), "iteration_s": statistics.median(ours), "ratio": ratio}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"K={len(models)} models (small_cnn, lenet5, mlp, resnet20), batch {args.batch}, 1x28x28, "
              f"{torch.get_num_threads()} threads")
        print(f"sum of K forward+backward: {result['baseline_s'] * 1e3:.1f} ms; "
              f"one min-max iteration: {result['iteration_s'] * 1e3:.1f} ms")
        print(f"RATIO minmax_iteration/sum_K_fwd_bwd = {ratio:.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
