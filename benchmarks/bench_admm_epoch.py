"""One ADMM epoch per sparsity structure vs a plain training epoch (same model, data, batch size and optimiser).

    .venv/bin/python benchmarks/bench_admm_epoch.py [--arch small_cnn] [--dataset mnist5k] [--repeats 3]
        [--structures unstructured,filter,channel,block,block-rows,pattern,nm,nested,quantize-4,quantize-8] [--json]
        [--epoch-images 60000]

An ADMM epoch is the W-step (every step's loss plus the proximal penalty (rho/2) sum_l ||W_l - Z_l + U_l||^2:
one extra element-wise pass over the pruned layers' weights and its gradient) followed by the Z-step (the
structure's projection of W + U, :mod:`advbench.compression.structures`) and the U-step.  ``block-rows`` prunes
rows inside the tiles; ``quantize-B`` is ADMM-NN's Z-step, the exact projection onto B-bit levels
(:func:`advbench.compression.projections.quantize`).  small_cnn has the 3x3 kernels PatDNN's patterns need.
Goal: <= 1.2x for every structure.

The Z-step costs the same whatever the epoch's length, so its share depends on how many images an epoch holds.
mnist5k trains on 4,000 digits; ``--epoch-images 60000`` tiles them to the size of MNIST's training set (a full
epoch of a real data set) and reports that ratio too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from advbench.compression import create_structure, project_sparse, resolve_targets  # noqa: E402
from advbench.compression.projections import quantize  # noqa: E402
from advbench.compression.targets import prunable_layers  # noqa: E402
from advbench.datasets import load_dataset  # noqa: E402
from advbench.models import create_model  # noqa: E402
from advbench.training import fit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--structures",
                        default="unstructured,filter,channel,block,block-rows,pattern,nm,nested,quantize-4,quantize-8")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--epoch-images", type=int, default=None,
                        help="tile the training images to this many per epoch (e.g. 60000, MNIST's training set)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    if args.epoch_images:
        if args.epoch_images < 1:
            raise SystemExit(f"--epoch-images must be positive, got {args.epoch_images}")
        index = torch.arange(args.epoch_images) % data.x_train.shape[0]
        data = dataclasses.replace(data, x_train=data.x_train[index], y_train=data.y_train[index])
    torch.manual_seed(0)
    model = create_model(args.arch, input_shape=data.input_shape, num_classes=data.num_classes)
    layers = prunable_layers(model)

    def epoch(structure=None) -> float:
        """One plain epoch (``structure`` None) or one ADMM epoch: W-step with the penalty, Z-step, U-step."""
        gen = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        if structure is None:
            fit(model, data, epochs=1, generator=gen, progress=False)
            return time.perf_counter() - start
        shape, targets, z, u, project = structure
        weights = {n: layers[n].weight for n in targets}

        def penalty() -> torch.Tensor:
            return (1e-3 / 2) * sum((weights[n] - z[n] + u[n]).square().sum() for n in weights)

        fit(model, data, epochs=1, generator=gen, penalty=penalty, progress=False)
        with torch.no_grad():
            for n, w in weights.items():
                z[n] = project(w + u[n], targets[n])
                u[n] += w - z[n]
        return time.perf_counter() - start

    def admm_state(name: str):
        bits = int(name.split("-")[1]) if name.startswith("quantize-") else None
        shape = create_structure("unstructured" if bits else name.split("-")[0],
                                 **({"prune": "rows"} if name == "block-rows" else {}))
        targets = resolve_targets(model, structure=shape, target=0.9)
        shape = shape.prepared({n: layers[n].weight.detach() for n in targets})  # a pattern library, once

        def project(w: torch.Tensor, ratio: float) -> torch.Tensor:
            return quantize(w, bits)[0] if bits else project_sparse(w, ratio, shape)

        z = {n: project(layers[n].weight.detach(), targets[n]) for n in targets}
        return shape, targets, z, {n: torch.zeros_like(layers[n].weight) for n in targets}, project

    states = {name: admm_state(name) for name in args.structures.split(",")}
    epoch(None)  # warm-up
    plain: list[float] = []
    admm: dict[str, list[float]] = {name: [] for name in states}
    for _ in range(args.repeats):  # interleaved, so drift in the machine's speed hits every column alike
        plain.append(epoch(None))
        for name, state in states.items():
            admm[name].append(epoch(state))
    base = statistics.median(plain)
    result = {"arch": args.arch, "dataset": args.dataset, "epoch_images": int(data.x_train.shape[0]),
              "threads": torch.get_num_threads(), "plain_epoch_s": base,
              "admm_epoch_s": {n: statistics.median(v) for n, v in admm.items()},
              "ratio": {n: statistics.median(v) / base for n, v in admm.items()}}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.arch} on {args.dataset} ({data.x_train.shape[0]} images per epoch), "
          f"{torch.get_num_threads()} threads: plain epoch {base:.2f} s")
    for name, ratio in result["ratio"].items():
        seconds = result["admm_epoch_s"][name]
        print(f"RATIO admm_epoch[{name}]/plain_epoch = {ratio:.3f}  ({seconds:.2f} s; goal <= 1.2)")


if __name__ == "__main__":
    main()
