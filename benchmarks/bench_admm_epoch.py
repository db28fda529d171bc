"""ADMM W-step epoch time vs a plain training epoch (same model, data, batch size and optimiser).

    .venv/bin/python benchmarks/bench_admm_epoch.py [--arch lenet5] [--dataset mnist5k] [--repeats 3] [--json]

The ADMM epoch adds the proximal penalty (rho/2) sum_l ||W_l - Z_l + U_l||^2 to every step's loss (one
extra element-wise pass over the pruned layers' weights and its gradient).  Goal: <= 1.2x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from advbench.compression import project_sparse, resolve_targets  # noqa: E402
from advbench.compression.targets import prunable_layers  # noqa: E402
from advbench.datasets import load_dataset  # noqa: E402
from advbench.models import create_model  # noqa: E402
from advbench.training import fit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="lenet5")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    torch.manual_seed(0)
    model = create_model(args.arch, input_shape=data.input_shape, num_classes=data.num_classes)
    layers = prunable_layers(model)
    targets = resolve_targets(model, structure="unstructured", target=0.9)
    weights = {n: layers[n].weight for n in targets}
    z = {n: project_sparse(w.detach(), targets[n], "unstructured") for n, w in weights.items()}
    u = {n: torch.zeros_like(w) for n, w in weights.items()}

    def penalty() -> torch.Tensor:
        return (1e-3 / 2) * sum((weights[n] - z[n] + u[n]).square().sum() for n in weights)

    def epoch(with_penalty: bool) -> float:
        gen = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        fit(model, data, epochs=1, generator=gen, penalty=penalty if with_penalty else None, progress=False)
        return time.perf_counter() - start

    epoch(False)
    epoch(True)  # warm-up
    plain, admm = [], []
    for _ in range(args.repeats):
        plain.append(epoch(False))
        admm.append(epoch(True))
    ratio = statistics.median(admm) / statistics.median(plain)
    result = {"arch": args.arch, "dataset": args.dataset, "threads": torch.get_num_threads(),
              "plain_epoch_s": statistics.median(plain), "admm_epoch_s": statistics.median(admm), "ratio": ratio}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.arch} on {args.dataset}, {torch.get_num_threads()} threads: plain epoch "
              f"{result['plain_epoch_s']:.2f} s, ADMM epoch {result['admm_epoch_s']:.2f} s")
        print(f"RATIO admm_epoch/plain_epoch = {ratio:.3f}  (goal <= 1.2)")


if __name__ == "__main__":
    main()
